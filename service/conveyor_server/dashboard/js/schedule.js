// One schedule (GET /v1/schedules/{id}): when it fires and its next fire
// times, the task it submits, its latest tasks with their states, and
// buttons to pause, resume, trigger now and delete it. Read again whenever
// one of its tasks changes (they carry its id as the label
// conveyor.schedule) and as the clock moves its next fire times.

import { ApiError, get, post, remove } from "./api.js";
import { errorBox, factRows, fill, h, json, stateBadge, when } from "./dom.js";
import { refreshOnChange } from "./feed.js";
import { OVERLAP_TEXT, durationText, firesText, scheduleState } from "./schedules.js";
import { filterByLabel } from "./tasks.js";

const REFRESH_SECONDS = 10;
// The label a schedule puts on the tasks it submits.
export const SCHEDULE_LABEL = "conveyor.schedule";

export function render(main, id) {
  const path = `/v1/schedules/${encodeURIComponent(id)}`;
  const parts = {
    state: h("span", { id: "schedule-state" }),
    status: h("div", { id: "schedule-status", role: "status" }),
    facts: h("dl", { class: "facts", id: "schedule-facts" }),
    task: h("pre", { id: "schedule-task", "aria-label": "The task it submits" }),
    fires: h("ol", { id: "next-fires", "aria-label": "Next fire times" }),
    runs: h("tbody", { id: "recent-runs" }),
    pause: h("button", { type: "button", id: "pause-schedule" }, "Pause"),
    resume: h("button", { type: "button", id: "resume-schedule" }, "Resume"),
    trigger: h("button", { type: "button", id: "trigger-schedule" }, "Trigger now"),
    delete: h("button", { type: "button", id: "delete-schedule" }, "Delete"),
  };
  const tasksLink = h("a", { href: "#/tasks", onclick: () => filterByLabel(SCHEDULE_LABEL, id) }, "All its tasks");
  const page = [
    h("h1", { id: "schedule-title" }, "Schedule ", h("span", { class: "mono" }, id), " ", parts.state),
    h("div", { class: "actions" }, parts.pause, parts.resume, parts.trigger, parts.delete),
    parts.status,
    h(
      "div",
      { class: "grid" },
      h("div", { class: "panel" }, h("h2", {}, "Details"), parts.facts),
      h("div", { class: "panel" }, h("h2", {}, "The task it submits"), parts.task),
      h("div", { class: "panel" }, h("h2", {}, "Next fire times"), parts.fires),
      h(
        "div",
        { class: "panel wide" },
        h("h2", {}, "Recent tasks"),
        h(
          "table",
          { "aria-label": "Its latest tasks, newest first" },
          h("thead", {}, h("tr", {}, ["Fire time", "Task", "State"].map((t) => h("th", {}, t)))),
          parts.runs,
        ),
        h("p", {}, tasksLink),
      ),
    ),
  ];
  fill(main, h("h1", { id: "schedule-title" }, "Schedule ", h("span", { class: "mono" }, id)), h("p", { class: "muted" }, "Loading…"));
  let loaded = false;
  let stopped = false;

  function show(schedule) {
    if (!loaded) fill(main, page);
    loaded = true;
    fill(parts.state, scheduleState(schedule));
    parts.pause.disabled = Boolean(schedule.paused);
    parts.resume.disabled = !schedule.paused;
    fill(parts.facts, facts(schedule));
    fill(parts.task, json(schedule.task || {}));
    const fireTimes = schedule.next_fire_times || [];
    fill(parts.fires, fireTimes.length ? fireTimes.map((time) => h("li", {}, when(time))) : h("li", { class: "muted" }, schedule.paused ? "none while paused" : "none"));
    const runs = schedule.recent_runs || [];
    fill(parts.runs, runs.map(runRow));
    if (runs.length === 0) parts.runs.append(h("tr", {}, h("td", { colspan: 3, class: "muted" }, "No tasks yet.")));
  }

  async function refresh() {
    try {
      const reply = await get(path);
      if (!stopped) show(reply.schedule);
    } catch (error) {
      if (stopped) return;
      if (error instanceof ApiError && error.status === 404) {
        stopRefreshing();
        fill(main, h("h1", { id: "schedule-title" }, "Schedule not found"), errorBox(new Error(`No schedule has the id ${id}.`)), h("a", { href: "#/schedules" }, "All schedules"));
      } else {
        fill(parts.status, errorBox(error));
      }
    }
  }

  async function act(call, done) {
    fill(parts.status);
    try {
      const reply = await call();
      if (reply && reply.schedule) show(reply.schedule);
      done(reply);
    } catch (error) {
      fill(parts.status, errorBox(error));
    }
  }

  parts.pause.addEventListener("click", () => act(() => post(`${path}:pause`), () => {}));
  parts.resume.addEventListener("click", () => act(() => post(`${path}:resume`), () => {}));
  parts.trigger.addEventListener("click", () =>
    act(
      () => post(`${path}:trigger`, {}),
      (reply) => {
        const taskId = reply.task.id;
        fill(parts.status, h("p", { class: "notice" }, "Submitted task ", h("a", { class: "mono", href: `#/tasks/${encodeURIComponent(taskId)}` }, taskId), "."));
        refresh();
      },
    ),
  );
  parts.delete.addEventListener("click", () => {
    if (!window.confirm(`Delete the schedule ${id}? The tasks it submitted stay.`)) return;
    act(
      () => remove(path),
      () => {
        location.hash = "#/schedules";
      },
    );
  });

  const stopRefreshing = refreshOnChange({ labels: [`${SCHEDULE_LABEL}=${id}`] }, refresh, REFRESH_SECONDS);
  return () => {
    stopped = true;
    stopRefreshing();
  };
}

function facts(schedule) {
  const rows = [
    ["Fires", firesText(schedule)],
    ["Task type", (schedule.task && schedule.task.type) || ""],
    ["Overlap", OVERLAP_TEXT[schedule.overlap_policy || "OVERLAP_POLICY_SKIP"] || schedule.overlap_policy],
    ["Catches up fires missed for", schedule.catch_up_window ? durationText(schedule.catch_up_window) : "1 minute"],
    ["Description", schedule.description || "none"],
    ["Created", when(schedule.create_time)],
    ["Updated", when(schedule.update_time)],
    ["Last fire", when(schedule.last_fire_time) || "never"],
  ];
  return factRows(rows);
}

function runRow(run) {
  return h(
    "tr",
    { dataset: { task: run.task_id } },
    h("td", {}, when(run.fire_time), run.triggered ? h("span", { class: "muted" }, " (triggered)") : ""),
    h("td", { class: "mono" }, h("a", { href: `#/tasks/${encodeURIComponent(run.task_id)}` }, run.task_id)),
    h("td", {}, stateBadge(run.state)),
  );
}
