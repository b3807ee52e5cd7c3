// One task, live: its state, progress, payload, result, error, times and
// attempts, why it waits while PENDING, its concurrency key and the tasks it
// depends on, with cancel, retry and submit again. Follows the task with
// GET /v1/tasks/{id}:watch: each event's id is the task's version, which
// EventSource sends back as Last-Event-ID when it reconnects, so a dropped
// stream resumes with no gap and nothing twice. "Updates received" lists each
// snapshot as it arrived. Only GET /v1/tasks/{id} says why a PENDING task
// waits, and the reason can change with no change to the task (its type is
// paused, a slot frees up), so the page asks again while the task waits.

import { ApiError, get, post } from "./api.js";
import { TERMINAL, errorBox, factRows, fill, h, json, labelsText, percentOf, progressBar, stateBadge, stateName, when } from "./dom.js";
import { SCHEDULE_LABEL } from "./schedule.js";
import { submitAgain } from "./submit.js";
import { followLogs } from "./task_logs.js";

const IMAGE_TYPES = { PNG: "image/png", JPEG: "image/jpeg", WEBP: "image/webp", GIF: "image/gif" };
// How often the reason a PENDING task waits is read again.
const WAIT_SECONDS = 5;

// PendingReason in words; the server's pending_message adds the figures.
const PENDING_REASONS = {
  PENDING_REASON_DEPENDENCIES: "Waiting for the tasks it depends on",
  PENDING_REASON_DELAYED: "Delayed",
  PENDING_REASON_BACKING_OFF: "Backing off before its next attempt",
  PENDING_REASON_TYPE_PAUSED: "Its task type is paused",
  PENDING_REASON_CONCURRENCY_LIMIT: "Its task type's running limit is reached",
  PENDING_REASON_KEY_CONCURRENCY_LIMIT: "Its concurrency key's running limit is reached",
  PENDING_REASON_RATE_LIMIT: "Its task type's start rate limit is reached",
  PENDING_REASON_NO_WORKER: "No live worker serves its task type",
  PENDING_REASON_QUEUED: "Queued behind other tasks of its type",
};

export function render(main, id) {
  const root = h("section", { "aria-labelledby": "task-title" });
  fill(main, root);
  fill(root, h("h1", { id: "task-title" }, "Task ", h("span", { class: "mono" }, id)), h("p", { class: "muted" }, "Loading…"));
  let source = null;
  let shown = null;
  let stopped = false;
  let waitTimer = null;
  const parts = layout(root, id);

  function show(task) {
    if (shown && Number(task.version) <= Number(shown.version)) return;
    shown = task;
    const state = stateName(task.state);
    fill(parts.state, stateBadge(task.state));
    fill(parts.progress, progressBar(percentOf(task), "Progress", true));
    fill(parts.message, (task.progress && task.progress.message) || "");
    if (state === "PENDING") explainWait();
    else stopExplaining();
    fill(parts.facts, facts(task));
    fill(parts.payload, json(task.payload || {}));
    fill(parts.result, task.result === undefined ? "none yet" : json(task.result));
    showImage(parts.image, task.result);
    fill(parts.error, task.error ? json(task.error) : "none");
    parts.cancel.disabled = TERMINAL.has(state);
    parts.retry.disabled = !(state === "FAILED" || state === "CANCELLED");
  }

  function watch() {
    if (stopped || source) return;
    // The first event is the current snapshot; a reconnect sends
    // Last-Event-ID, and the server continues after that version.
    source = new EventSource(`/v1/tasks/${encodeURIComponent(id)}:watch`);
    source.onopen = () => fill(parts.live, "Live: updates are pushed by the server.");
    source.onmessage = (event) => {
      const task = JSON.parse(event.data).task;
      if (!shown) fill(root, parts.all);
      received(task);
      show(task);
      if (TERMINAL.has(stateName(task.state))) {
        source.close();
        source = null;
        fill(parts.live, "Finished.");
      }
    };
    source.onerror = () => {
      if (source && source.readyState === EventSource.CLOSED) {
        source = null;
        if (shown) fill(parts.live, "Not live: reload the page to follow this task.");
        else notFound();
      } else {
        fill(parts.live, "Reconnecting…");
      }
    };
  }

  // A refused stream says nothing of why: ask GET for the status.
  function notFound() {
    get(`/v1/tasks/${encodeURIComponent(id)}`)
      .then(() => fill(root, errorBox(new Error("This task cannot be followed now: reload the page."))))
      .catch((error) => {
        const message = error instanceof ApiError && error.status === 404 ? new Error(`No task has the id ${id}.`) : error;
        fill(root, h("h1", { id: "task-title" }, "Task not found"), errorBox(message), h("a", { href: "#/tasks" }, "All tasks"));
      });
  }

  // Why the task waits, from GET (the stream's snapshots leave it unset),
  // then again every WAIT_SECONDS until the task leaves PENDING.
  async function explainWait() {
    clearTimeout(waitTimer);
    waitTimer = null;
    let task;
    try {
      task = (await get(`/v1/tasks/${encodeURIComponent(id)}`)).task;
    } catch {
      task = null; // shown again on the next try; the stream reports real trouble
    }
    if (stopped || !shown || stateName(shown.state) !== "PENDING") return;
    showWait(parts.waiting, task);
    clearTimeout(waitTimer); // one timer, however many reads overlapped
    waitTimer = setTimeout(explainWait, WAIT_SECONDS * 1000);
  }

  function stopExplaining() {
    clearTimeout(waitTimer);
    waitTimer = null;
    showWait(parts.waiting, null);
  }

  function received(task) {
    const percent = Math.round(percentOf(task));
    parts.events.append(
      h("li", { dataset: { version: task.version, state: stateName(task.state) } }, `version ${task.version}: ${stateName(task.state)}, ${percent}%`),
    );
  }

  async function act(verb) {
    fill(parts.problem);
    try {
      const reply = await post(`/v1/tasks/${encodeURIComponent(id)}:${verb}`);
      show(reply.task);
      if (!TERMINAL.has(stateName(reply.task.state))) watch();
    } catch (error) {
      fill(parts.problem, errorBox(error));
    }
  }
  parts.cancel.addEventListener("click", () => act("cancel"));
  parts.retry.addEventListener("click", () => act("retry"));
  parts.again.addEventListener("click", () => shown && submitAgain(shown));

  watch();
  const stopLogs = followLogs(parts.logs, id);

  return () => {
    stopped = true;
    clearTimeout(waitTimer);
    stopLogs();
    if (source) source.close();
  };
}

function layout(root, id) {
  const parts = {
    state: h("span", { id: "task-state" }),
    progress: h("div", { id: "task-progress" }),
    message: h("p", { id: "progress-message", class: "muted" }),
    waiting: h("p", { class: "notice", id: "pending-reason", role: "status", hidden: true }),
    live: h("p", { class: "live", id: "live-status", "aria-live": "polite" }),
    problem: h("div"),
    facts: h("dl", { class: "facts", id: "task-facts" }),
    payload: h("pre", { id: "task-payload", "aria-label": "Payload" }),
    result: h("pre", { id: "task-result", "aria-label": "Result" }),
    image: h("div"),
    error: h("pre", { id: "task-error", "aria-label": "Error" }),
    events: h("ol", { class: "events", id: "task-events", "aria-label": "Updates received" }),
    cancel: h("button", { type: "button", id: "cancel" }, "Cancel"),
    retry: h("button", { type: "button", id: "retry" }, "Retry"),
    again: h("button", { type: "button", id: "submit-again" }, "Submit again"),
    logs: h("div"),
  };
  parts.all = [
    h("h1", { id: "task-title" }, "Task ", h("span", { class: "mono" }, id), " ", parts.state),
    parts.progress,
    parts.message,
    parts.waiting,
    parts.live,
    h("div", { class: "actions" }, parts.cancel, parts.retry, parts.again),
    parts.problem,
    ...tabs([
      [
        "Overview",
        h(
          "div",
          { class: "grid" },
          h("div", { class: "panel" }, h("h2", {}, "Details"), parts.facts),
          h("div", { class: "panel" }, h("h2", {}, "Payload"), parts.payload),
          h("div", { class: "panel" }, h("h2", {}, "Result"), parts.result, parts.image),
          h("div", { class: "panel" }, h("h2", {}, "Error"), parts.error),
          h("div", { class: "panel" }, h("h2", {}, "Updates received"), parts.events),
        ),
      ],
      ["Logs", h("section", { class: "panel", id: "logs-panel" }, parts.logs)],
    ]),
  ];
  return parts;
}

/** A tab list and its panels (`[label, content]` each), the first shown:
 * the ARIA tabs pattern, with the arrow keys moving between tabs. */
function tabs(entries) {
  const buttons = [];
  const panels = [];
  entries.forEach(([label, content], index) => {
    const key = label.toLowerCase();
    buttons.push(
      h(
        "button",
        {
          type: "button",
          role: "tab",
          id: `tab-${key}`,
          "aria-controls": `tab-panel-${key}`,
          "aria-selected": index === 0 ? "true" : "false",
          tabindex: index === 0 ? "0" : "-1",
        },
        label,
      ),
    );
    panels.push(
      h(
        "div",
        { role: "tabpanel", id: `tab-panel-${key}`, "aria-labelledby": `tab-${key}`, hidden: index !== 0 },
        content,
      ),
    );
  });
  function select(chosen) {
    buttons.forEach((button, index) => {
      const on = index === chosen;
      button.setAttribute("aria-selected", on ? "true" : "false");
      button.tabIndex = on ? 0 : -1;
      panels[index].hidden = !on;
    });
    buttons[chosen].focus();
  }
  buttons.forEach((button, index) => {
    button.addEventListener("click", () => select(index));
    button.addEventListener("keydown", (event) => {
      const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
      if (step) select((index + step + buttons.length) % buttons.length);
    });
  });
  return [h("div", { class: "tabs", role: "tablist", "aria-label": "Task views" }, buttons), ...panels];
}

function facts(task) {
  const rows = [
    ["Type", task.type],
    ["Attempt", `${task.attempt || 0} of ${task.max_attempts || 0}`],
    ["Priority", task.priority || 0],
    ["Labels", labelsText(task.labels) || "none"],
    ["Concurrency key", task.concurrency_key || "none"],
    ["Depends on", dependencies(task)],
    ["Created", when(task.create_time)],
    ["Started", when(task.start_time) || "not yet"],
    ["Ended", when(task.end_time) || "not yet"],
    ["Updated", when(task.update_time)],
    ["Version", task.version],
  ];
  const schedule = (task.labels || {})[SCHEDULE_LABEL];
  if (schedule) rows.push(["Schedule", h("a", { href: `#/schedules/${encodeURIComponent(schedule)}` }, schedule)]);
  return factRows(rows);
}

function dependencies(task) {
  const ids = task.depends_on || [];
  if (ids.length === 0) return "none";
  const links = ids.map((parent) => h("a", { class: "mono", href: `#/tasks/${encodeURIComponent(parent)}` }, parent));
  const onFailure = task.run_on_dependency_failure ? "runs even if one fails" : "cancelled if one fails";
  return h("span", { id: "task-dependencies" }, links.flatMap((link) => [link, " "]), h("span", { class: "muted" }, `(${onFailure})`));
}

/** "Delayed: until 10:00:00" in the notice, or the notice hidden when the
 * task does not wait (any more) or the server gives no reason. */
function showWait(element, task) {
  const reason = task && stateName(task.state) === "PENDING" ? task.pending_reason : undefined;
  const known = reason && reason !== "PENDING_REASON_UNSPECIFIED";
  element.hidden = !known;
  if (!known) {
    delete element.dataset.reason;
    fill(element);
    return;
  }
  element.dataset.reason = reason.replace(/^PENDING_REASON_/, "");
  const title = PENDING_REASONS[reason] || reason;
  fill(element, h("strong", {}, "Why it waits: "), title, task.pending_message ? `: ${task.pending_message}` : "");
}

function showImage(element, result) {
  const type = result && typeof result.image === "string" && IMAGE_TYPES[String(result.format || "").toUpperCase()];
  fill(element, type ? h("img", { class: "result-image", alt: "The resulting image", src: `data:${type};base64,${result.image}` }) : "");
}
