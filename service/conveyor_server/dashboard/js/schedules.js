// The schedules: a page of them by id (GET /v1/schedules), each with when it
// fires next, and the form that creates one (POST /v1/schedules): a cron
// expression in a time zone or a fixed interval, the task it submits, what
// to do when a fire finds the last task unfinished, and how late a missed
// fire may still be submitted. A refusal's field violations are shown
// beside the field they name.

import { get, post, query } from "./api.js";
import { clearSlots, errorBox, errorSlots, field, fill, h, json, namedIn, showViolations, when } from "./dom.js";

const PAGE_SIZE = 50;
const REFRESH_SECONDS = 10;

export const OVERLAP_TEXT = {
  OVERLAP_POLICY_SKIP: "skip while the last task is unfinished",
  OVERLAP_POLICY_ALLOW: "allow overlapping runs",
};

const UNITS = [
  [86400, "day"],
  [3600, "hour"],
  [60, "minute"],
];

/** "90s" (a Duration in proto3 JSON) -> "90 seconds", "3600s" -> "1 hour". */
export function durationText(duration) {
  const seconds = Number.parseFloat(duration || "0");
  for (const [size, unit] of UNITS) {
    if (seconds >= size && seconds % size === 0) return plural(seconds / size, unit);
  }
  return plural(seconds, "second");
}

const plural = (count, unit) => `${count} ${unit}${count === 1 ? "" : "s"}`;

/** When a schedule fires, in words. */
export function firesText(schedule) {
  if (schedule.cron) return `cron ${schedule.cron} (${schedule.time_zone || "UTC"})`;
  return `every ${durationText(schedule.interval)}`;
}

/** The paused or active mark of a schedule. */
export function scheduleState(schedule) {
  return schedule.paused ? h("span", { class: "paused", dataset: { paused: "true" } }, "paused") : h("span", { dataset: { paused: "false" } }, "active");
}

export function render(main) {
  const body = h("tbody", { id: "schedule-rows" });
  const next = h("button", { type: "button", id: "next-schedules" }, "Next");
  const previous = h("button", { type: "button", id: "previous-schedules" }, "Previous");
  const problem = h("div");
  fill(
    main,
    h("h1", {}, "Schedules"),
    h(
      "p",
      { class: "muted" },
      "Each fire submits an ordinary task, once, however many servers and workers run. " +
        "Its tasks carry the label conveyor.schedule with the schedule's id.",
    ),
    problem,
    h(
      "table",
      { "aria-label": "Schedules, by id" },
      h("thead", {}, h("tr", {}, ["Id", "Fires", "Task type", "Next fire", "Last fire", "State"].map((t) => h("th", {}, t)))),
      body,
    ),
    h("div", { class: "paging" }, previous, next),
    h("h2", { id: "create-title" }, "Create a schedule"),
    createForm(),
  );
  let tokens = [""];
  let nextToken = "";
  let stopped = false;

  async function load() {
    try {
      const reply = await get(`/v1/schedules${query({ page_size: PAGE_SIZE, page_token: tokens[tokens.length - 1] })}`);
      if (stopped) return;
      fill(problem);
      const schedules = reply.schedules || [];
      fill(body, schedules.map(row));
      if (schedules.length === 0) body.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No schedules yet.")));
      nextToken = reply.next_page_token || "";
      next.disabled = !nextToken;
      previous.disabled = tokens.length === 1;
    } catch (error) {
      if (!stopped) fill(problem, errorBox(error));
    }
  }

  next.addEventListener("click", () => {
    if (nextToken) {
      tokens.push(nextToken);
      load();
    }
  });
  previous.addEventListener("click", () => {
    if (tokens.length > 1) {
      tokens.pop();
      load();
    }
  });

  load();
  // The next fire times move on with the clock.
  const timer = setInterval(load, REFRESH_SECONDS * 1000);
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}

function row(schedule) {
  return h(
    "tr",
    { dataset: { id: schedule.id } },
    h("th", { scope: "row", class: "mono" }, h("a", { href: `#/schedules/${encodeURIComponent(schedule.id)}` }, schedule.id)),
    h("td", {}, firesText(schedule)),
    h("td", {}, (schedule.task && schedule.task.type) || ""),
    h("td", {}, when((schedule.next_fire_times || [])[0]) || "none"),
    h("td", {}, when(schedule.last_fire_time) || "never"),
    h("td", {}, scheduleState(schedule)),
  );
}

// The form's fields that a violation's path can name (after "schedule."),
// with "task" for the task's type and the rest of the task but its payload.
const FIELDS = ["id", "description", "cron", "time_zone", "interval", "task", "payload", "overlap_policy", "catch_up_window"];

function violationField(path) {
  const inSchedule = path.replace(/^schedule\./, "");
  if (inSchedule.startsWith("task.payload")) return "payload";
  return namedIn(FIELDS)(inSchedule);
}

function createForm() {
  const slots = errorSlots([...FIELDS, "form"], "error-schedule-");
  const input = (name, attributes = {}) =>
    h("input", { id: `schedule-${name}`, name, "aria-describedby": `error-schedule-${name}`, ...attributes });
  const id = input("id", { required: true, placeholder: "nightly-report", pattern: "[A-Za-z0-9._-]{1,64}" });
  const description = input("description", { placeholder: "for people" });
  const byCron = h("input", { type: "radio", name: "fires", id: "fires-cron", value: "cron", checked: true });
  const byInterval = h("input", { type: "radio", name: "fires", id: "fires-interval", value: "interval" });
  const cron = input("cron", { placeholder: "0 3 * * *", spellcheck: "false" });
  const zones = h("datalist", { id: "time-zones" }, Intl.supportedValuesOf("timeZone").map((zone) => h("option", { value: zone })));
  const timeZone = input("time_zone", { placeholder: "UTC", list: "time-zones" });
  const interval = input("interval", { type: "number", min: 1, step: "any", placeholder: "seconds" });
  const type = h("select", { id: "schedule-type", name: "type", required: true, "aria-describedby": "error-schedule-task" });
  const payload = h("textarea", { id: "schedule-payload", name: "payload", spellcheck: "false", "aria-describedby": "error-schedule-payload" });
  const overlap = h(
    "select",
    { id: "schedule-overlap_policy", name: "overlap_policy", "aria-describedby": "error-schedule-overlap_policy" },
    Object.entries(OVERLAP_TEXT).map(([value, text]) => h("option", { value }, text)),
  );
  const catchUp = input("catch_up_window", { type: "number", min: 0, step: "any", placeholder: "60" });
  const cronFields = h(
    "div",
    { class: "filters" },
    field("schedule-cron", "Cron expression (minute hour day month weekday)", cron, slots.cron),
    field("schedule-time_zone", "Time zone", timeZone, zones, slots.time_zone),
  );
  const intervalFields = h("div", { class: "filters", hidden: true }, field("schedule-interval", "Every (seconds)", interval, slots.interval));
  const button = h("button", { type: "submit", class: "primary" }, "Create");
  const form = h(
    "form",
    { class: "form", "aria-labelledby": "create-title", novalidate: true },
    field("schedule-id", "Id (letters, digits, . _ -)", id, slots.id),
    field("schedule-description", "Description", description, slots.description),
    h(
      "fieldset",
      { class: "choice" },
      h("legend", {}, "Fires"),
      h("label", {}, byCron, " on a cron expression"),
      h("label", {}, byInterval, " at a fixed interval"),
    ),
    cronFields,
    intervalFields,
    field("schedule-type", "Task type", type, slots.task),
    field("schedule-payload", "Payload (JSON)", payload, slots.payload),
    field("schedule-overlap_policy", "When a fire finds the last task unfinished", overlap, slots.overlap_policy),
    field("schedule-catch_up_window", "Catch up fires missed up to this many seconds ago", catchUp, slots.catch_up_window),
    slots.form,
    h("div", { class: "actions" }, button),
  );

  let types = [];
  const choose = () => {
    const chosen = types.find((t) => t.name === type.value);
    payload.value = json((chosen && chosen.example_payload) || {});
  };
  const fires = () => {
    cronFields.hidden = !byCron.checked;
    intervalFields.hidden = !byInterval.checked;
  };
  byCron.addEventListener("change", fires);
  byInterval.addEventListener("change", fires);
  type.addEventListener("change", choose);
  get("/v1/taskTypes")
    .then((reply) => {
      types = reply.task_types || [];
      for (const t of types) type.append(h("option", { value: t.name }, t.name));
      if (types.length) choose();
    })
    .catch((error) => fill(slots.form, error.message));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearSlots(slots);
    const schedule = {
      id: id.value.trim(),
      description: description.value.trim(),
      overlap_policy: overlap.value,
      task: { type: type.value },
    };
    try {
      schedule.task.payload = JSON.parse(payload.value || "{}");
    } catch (error) {
      fill(slots.payload, `payload: not valid JSON: ${error.message}`);
      payload.focus();
      return;
    }
    if (byCron.checked) {
      schedule.cron = cron.value.trim();
      schedule.time_zone = timeZone.value.trim();
    } else if (interval.value !== "") {
      schedule.interval = `${Number(interval.value)}s`;
    }
    if (catchUp.value !== "") schedule.catch_up_window = `${Number(catchUp.value)}s`;
    button.disabled = true;
    try {
      const reply = await post("/v1/schedules", { schedule });
      location.hash = `#/schedules/${encodeURIComponent(reply.schedule.id)}`;
    } catch (error) {
      showViolations(error, slots, violationField);
    } finally {
      button.disabled = false;
    }
  });
  return form;
}
