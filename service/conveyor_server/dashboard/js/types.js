// The task types: for each, whether it is paused, how many of its tasks run
// and wait, the limits in force beside those its handler declares (from
// GET /v1/taskTypes), a button to pause or resume it, and a form to change
// its limits (PATCH /v1/taskTypes/{name}). Refreshed as tasks change, since
// running and pending move with them.

import { get, patch, post } from "./api.js";
import { clearSlots, errorBox, errorSlots, field, fill, h, showViolations } from "./dom.js";
import { refreshOnChange } from "./feed.js";
import { filterByType } from "./tasks.js";

const REFRESH_SECONDS = 10;

// TaskTypeLimits' fields, which the update_mask names. 0 means no limit.
const LIMITS = [
  { name: "max_running", label: "Max running", integer: true },
  { name: "max_running_per_key", label: "Max running per key", integer: true },
  { name: "max_starts_per_second", label: "Max starts per second", integer: false },
  { name: "burst", label: "Burst", integer: true },
];

const limitText = (value) => (Number(value || 0) ? String(value) : "none");
const typePath = (name) => `/v1/taskTypes/${encodeURIComponent(name)}`;

export function render(main) {
  const body = h("tbody", { id: "type-rows" });
  const problem = h("div");
  const editor = limitsEditor(shown);
  fill(
    main,
    h("h1", {}, "Task types"),
    h(
      "p",
      { class: "muted" },
      "Limits hold across every worker and replica: a task over a limit waits PENDING, it never fails for it. " +
        "A paused type still accepts tasks and lets running ones finish, but starts none.",
    ),
    problem,
    h(
      "table",
      { "aria-label": "Task types, their limits and state" },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["Type", "State", "Running", "Pending", "Workers", ...LIMITS.map((limit) => limit.label), ""].map((t) => h("th", {}, t)),
        ),
      ),
      body,
    ),
    editor.element,
  );
  let stopped = false;

  function shown(type) {
    const current = body.querySelector(`tr[data-type="${CSS.escape(type.name)}"]`);
    if (current) current.replaceWith(row(type));
  }

  async function setPaused(name, paused) {
    fill(problem);
    try {
      const reply = await post(`${typePath(name)}:${paused ? "pause" : "resume"}`);
      shown(reply.task_type);
    } catch (error) {
      fill(problem, errorBox(error));
    }
  }

  function row(type) {
    const limits = type.limits || {};
    const declared = type.default_limits || {};
    const verb = type.paused ? "Resume" : "Pause";
    return h(
      "tr",
      { dataset: { type: type.name, paused: String(Boolean(type.paused)) } },
      h("th", { scope: "row" }, h("a", { href: "#/tasks", onclick: () => filterByType(type.name) }, type.name)),
      h("td", { class: "type-state" }, type.paused ? h("span", { class: "paused" }, "paused") : "active"),
      h("td", { dataset: { count: "running" } }, type.running || 0),
      h("td", { dataset: { count: "pending" } }, type.pending || 0),
      h("td", {}, type.workers || 0),
      LIMITS.map(({ name }) => h("td", { dataset: { limit: name } }, limitCell(limits[name], declared[name]))),
      h(
        "td",
        { class: "row-actions" },
        h("button", { type: "button", class: "pause", "aria-label": `${verb} ${type.name}`, onclick: () => setPaused(type.name, !type.paused) }, verb),
        h("button", { type: "button", class: "edit-limits", "aria-label": `Change the limits of ${type.name}`, onclick: () => editor.open(type) }, "Limits…"),
      ),
    );
  }

  async function refresh() {
    try {
      const types = (await get("/v1/taskTypes")).task_types || [];
      if (stopped) return;
      fill(problem);
      fill(body, types.map(row));
      if (types.length === 0) body.append(h("tr", {}, h("td", { colspan: 10, class: "muted" }, "No task types: no handler is registered and no worker is live.")));
    } catch (error) {
      if (!stopped) fill(problem, errorBox(error));
    }
  }

  const stopRefreshing = refreshOnChange({}, refresh, REFRESH_SECONDS);
  return () => {
    stopped = true;
    stopRefreshing();
  };
}

/** The limit in force, and the declared one beside it when they differ. */
function limitCell(value, declared) {
  if (Number(value || 0) === Number(declared || 0)) return limitText(value);
  return [limitText(value), " ", h("span", { class: "muted declared" }, `(declared: ${limitText(declared)})`)];
}

/** The form that changes one type's limits; `saved(type)` is told the
 * type as the server answered. */
function limitsEditor(saved) {
  const slots = errorSlots([...LIMITS.map((limit) => limit.name), "form"], "error-limit-");
  const inputs = {};
  const declared = {};
  for (const limit of LIMITS) {
    inputs[limit.name] = h("input", {
      id: `limit-${limit.name}`,
      name: limit.name,
      type: "number",
      min: 0,
      step: limit.integer ? 1 : "any",
      placeholder: "none",
      "aria-describedby": `declared-${limit.name} error-limit-${limit.name}`,
    });
    declared[limit.name] = h("span", { class: "muted", id: `declared-${limit.name}` });
  }
  const title = h("h2", { id: "limits-title" });
  const status = h("p", { class: "live", id: "limits-status", role: "status" });
  const restore = h("button", { type: "button", id: "restore-limits" }, "Restore declared limits");
  const close = h("button", { type: "button", id: "close-limits" }, "Close");
  const form = h(
    "form",
    { class: "filters", "aria-labelledby": "limits-title", novalidate: true },
    LIMITS.map((limit) => field(`limit-${limit.name}`, limit.label, inputs[limit.name], declared[limit.name], slots[limit.name])),
    h("button", { type: "submit", class: "primary" }, "Save"),
    restore,
    close,
  );
  const element = h(
    "section",
    { class: "panel", id: "limits-editor", hidden: true },
    title,
    h("p", { class: "muted" }, "Empty or 0 means no limit. Burst 0 means max(1, max starts per second)."),
    form,
    slots.form,
    status,
  );
  let type = null;

  function show(shownType) {
    type = shownType;
    const limits = type.limits || {};
    const defaults = type.default_limits || {};
    fill(title, `Limits of ${type.name}`);
    for (const { name } of LIMITS) {
      inputs[name].value = Number(limits[name] || 0) ? String(limits[name]) : "";
      fill(declared[name], `declared: ${limitText(defaults[name])}`);
    }
  }

  async function send(request, done) {
    clearSlots(slots);
    fill(status);
    try {
      const reply = await patch(typePath(type.name), { name: type.name, ...request });
      show(reply.task_type);
      saved(reply.task_type);
      fill(status, done);
    } catch (error) {
      showViolations(error, slots, (path) => path.split(".").pop());
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const current = type.limits || {};
    const changed = {};
    for (const { name } of LIMITS) {
      const value = inputs[name].value.trim() === "" ? 0 : Number(inputs[name].value);
      if (value !== Number(current[name] || 0)) changed[name] = value;
    }
    const names = Object.keys(changed);
    if (names.length === 0) {
      clearSlots(slots);
      fill(status, "Nothing to save: these are the limits in force.");
      return;
    }
    // Only the limits changed: the others keep following the declared ones.
    send({ limits: changed, update_mask: names.join(",") }, `Saved: ${names.join(", ")}.`);
  });
  restore.addEventListener("click", () => send({ restore_defaults: true }, "The declared limits are in force again."));
  close.addEventListener("click", () => {
    element.hidden = true;
  });

  return {
    element,
    open(shownType) {
      clearSlots(slots);
      fill(status);
      show(shownType);
      element.hidden = false;
      inputs.max_running.focus();
    },
  };
}
