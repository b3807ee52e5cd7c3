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

/** A message for a failed call, in a box screen readers announce. */
export function errorBox(error) {
  return h("p", { class: "error-box", role: "alert" }, error.message || String(error));
}
