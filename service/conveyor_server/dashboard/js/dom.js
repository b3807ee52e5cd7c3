// Building the page from data without innerHTML, so that a task's labels,
// payload or error text can never become markup.

/** h("a", {href: "#/"}, "text", child) */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(element.dataset, value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace an element's children. */
export function fill(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

export const STATES = ["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"];
export const TERMINAL = new Set(["SUCCEEDED", "FAILED", "CANCELLED"]);

/** "TASK_STATE_RUNNING" -> "RUNNING" */
export function stateName(state) {
  return (state || "TASK_STATE_UNSPECIFIED").replace(/^TASK_STATE_/, "");
}

export function stateBadge(state) {
  const name = stateName(state);
  return h("span", { class: `state state-${name}`, dataset: { state: name } }, name);
}

export function percentOf(task) {
  return Math.max(0, Math.min(100, Number((task.progress && task.progress.percent) || 0)));
}

/** A progress bar with its value for assistive technology. */
export function progressBar(percent, label, big = false) {
  const rounded = Math.round(percent);
  const inner = h("div");
  inner.style.width = `${rounded}%`;
  return h(
    "div",
    {
      class: big ? "bar big" : "bar",
      role: "progressbar",
      "aria-label": label,
      "aria-valuemin": 0,
      "aria-valuemax": 100,
      "aria-valuenow": rounded,
    },
    inner,
  );
}

export function when(timestamp) {
  if (!timestamp) return "";
  const date = new Date(timestamp);
  return Number.isNaN(date.getTime()) ? timestamp : date.toLocaleString();
}

export function labelsText(labels) {
  return Object.entries(labels || {})
    .map(([key, value]) => `${key}=${value}`)
    .join(", ");
}

export function json(value) {
  return JSON.stringify(value === undefined ? null : value, null, 2);
}

/** A form control with its label above it, and any hints or errors after. */
export function field(id, label, control, ...more) {
  return h("div", { class: "field" }, h("label", { for: id }, label), control, ...more);
}

/** The <dt>/<dd> pairs of a <dl class="facts"> from [name, value] rows. */
export function factRows(rows) {
  return rows.flatMap(([name, value]) => [h("dt", {}, name), h("dd", {}, value)]);
}

/** An empty error line per name, announced when filled: {name: <p id="PREFIXname">}. */
export function errorSlots(names, prefix = "error-") {
  return Object.fromEntries(names.map((name) => [name, h("p", { class: "field-error", id: `${prefix}${name}`, role: "alert" })]));
}

export function clearSlots(slots) {
  for (const slot of Object.values(slots)) fill(slot);
}

/** For showViolations: the one of `fields` a violation's path names, so
 * "payload.seconds" and "labels[0]" find "payload" and "labels". */
export function namedIn(fields) {
  return (path) => fields.find((f) => path === f || path.startsWith(`${f}.`) || path.startsWith(`${f}[`));
}

/**
 * A refusal shown beside the fields it names: each field violation goes to
 * slots[fieldOf(path)], or to slots.form when fieldOf names no slot; a
 * refusal without violations (or any other failure) goes to slots.form.
 */
export function showViolations(error, slots, fieldOf) {
  const violations = error.violations || [];
  if (violations.length === 0) {
    fill(slots.form, error.message || String(error));
    return;
  }
  for (const { field: path, description: text } of violations) {
    const slot = slots[fieldOf(path)] || slots.form;
    slot.append(h("span", { dataset: { field: path } }, `${path}: ${text}`), h("br"));
  }
}

/** A message for a failed call, in a box screen readers announce. */
export function errorBox(error) {
  return h("p", { class: "error-box", role: "alert" }, error.message || String(error));
}
