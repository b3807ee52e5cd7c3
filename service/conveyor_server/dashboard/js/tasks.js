// The task list: filters by state, type and label, search by id, pages of
// PAGE_SIZE, newest first. Rows change in place as the change feed reports
// changes; a new task that matches appears on top of the first page. Cancel
// matching and retry matching act on every task the applied filter matches,
// on every page (POST /v1/tasks:batchCancel and :batchRetry).

import { ApiError, get, post, query } from "./api.js";
import { STATUS_TEXT, followTasks } from "./feed.js";
import { STATES, errorBox, field, fill, h, labelsText, percentOf, progressBar, stateBadge, stateName, when } from "./dom.js";

const PAGE_SIZE = 20;

// Kept across visits, so coming back to the list keeps its filters.
const filter = { state: "", type: "", label: "" };

/** Open the list filtered by one type (from the overview's table). */
export function filterByType(type) {
  Object.assign(filter, { state: "", type, label: "" });
}

/** Open the list filtered by one label (a schedule's tasks). */
export function filterByLabel(key, value) {
  Object.assign(filter, { state: "", type: "", label: `${key}=${value}` });
}

function parseLabel(text) {
  const [key, ...rest] = text.split("=");
  return rest.length && key.trim() ? { key: key.trim(), value: rest.join("=").trim() } : null;
}

/** The applied filter in words, for the question before a batch action. */
function filterText() {
  const label = parseLabel(filter.label);
  const parts = [
    filter.state && `in state ${filter.state}`,
    filter.type && `of type ${filter.type}`,
    label && `labelled ${label.key}=${label.value}`,
  ];
  return parts.filter(Boolean).join(", ");
}

/** The applied filter as a TaskFilter, for the batch actions. */
function taskFilter() {
  const label = parseLabel(filter.label);
  return {
    states: filter.state ? [`TASK_STATE_${filter.state}`] : [],
    type: filter.type,
    labels: label ? { [label.key]: label.value } : {},
  };
}

// What each batch action asks first and says after, from its response.
const BATCH_ACTIONS = {
  cancel: {
    route: "/v1/tasks:batchCancel",
    question: (what) => `Cancel every unfinished task ${what}?`,
    outcome: (reply) =>
      `${Number(reply.matched || 0)} matched: ${Number(reply.cancelled || 0)} cancelled, ` +
      `${Number(reply.cancel_requested || 0)} running asked to stop.`,
  },
  retry: {
    route: "/v1/tasks:batchRetry",
    question: (what) => `Retry every failed or cancelled task ${what}?`,
    outcome: (reply) => `${Number(reply.matched || 0)} matched: ${Number(reply.retried || 0)} retried.`,
  },
};

function matches(task) {
  if (filter.state && stateName(task.state) !== filter.state) return false;
  if (filter.type && task.type !== filter.type) return false;
  const label = parseLabel(filter.label);
  return !label || (task.labels || {})[label.key] === label.value;
}

export function render(main) {
  const stateSelect = h(
    "select",
    { id: "filter-state", name: "state" },
    h("option", { value: "" }, "any state"),
    STATES.map((state) => h("option", { value: state }, state)),
  );
  const typeSelect = h("select", { id: "filter-type", name: "type" }, h("option", { value: "" }, "any type"));
  const labelInput = h("input", { id: "filter-label", name: "label", placeholder: "key=value", "aria-describedby": "filter-error" });
  const idInput = h("input", { id: "search-id", name: "id", placeholder: "task id", "aria-describedby": "filter-error" });
  const filterError = h("p", { class: "field-error", id: "filter-error", role: "alert" });
  const cancelMatching = h("button", { type: "button", id: "cancel-matching" }, "Cancel matching");
  const retryMatching = h("button", { type: "button", id: "retry-matching" }, "Retry matching");
  const batchStatus = h("p", { class: "live", id: "batch-status", role: "status" });
  const status = h("p", { class: "live", id: "live-status", "aria-live": "polite" });
  const body = h("tbody", { id: "task-rows" });
  const older = h("button", { type: "button", id: "older" }, "Older");
  const newer = h("button", { type: "button", id: "newer" }, "Newer");
  const pageLabel = h("span", { class: "muted", id: "page-number" });
  const problem = h("div");
  const filters = h(
    "form",
    { class: "filters", "aria-label": "Filter tasks" },
    field("filter-state", "State", stateSelect),
    field("filter-type", "Type", typeSelect),
    field("filter-label", "Label", labelInput),
    h("button", { type: "submit" }, "Apply"),
  );
  const search = h(
    "form",
    { class: "filters", "aria-label": "Find a task by id" },
    field("search-id", "Task id", idInput),
    h("button", { type: "submit" }, "Find"),
  );
  fill(
    main,
    h("h1", {}, "Tasks"),
    filters,
    search,
    filterError,
    h("div", { class: "actions" }, cancelMatching, retryMatching, batchStatus),
    status,
    problem,
    h(
      "table",
      { "aria-label": "Tasks, newest first" },
      h("thead", {}, h("tr", {}, ["Id", "Type", "State", "Progress", "Attempt", "Created", "Labels"].map((t) => h("th", {}, t)))),
      body,
    ),
    h("div", { class: "paging" }, newer, older, pageLabel),
  );

  stateSelect.value = filter.state;
  labelInput.value = filter.label;
  showFilter();
  const rows = new Map();
  let tokens = [""]; // the page_token of each page seen, the first page's empty
  let next = "";
  let stopped = false;
  let stopFollowing = () => {};

  get("/v1/taskTypes").then((reply) => {
    for (const type of reply.task_types || []) typeSelect.append(h("option", { value: type.name }, type.name));
    if (filter.type && ![...typeSelect.options].some((o) => o.value === filter.type)) {
      typeSelect.append(h("option", { value: filter.type }, filter.type));
    }
    typeSelect.value = filter.type;
  });

  async function load() {
    const label = parseLabel(filter.label);
    const params = {
      page_size: PAGE_SIZE,
      view: "TASK_VIEW_BASIC",
      states: filter.state ? [`TASK_STATE_${filter.state}`] : [],
      type: filter.type,
      labels: label ? [`${label.key}=${label.value}`] : [],
      page_token: tokens[tokens.length - 1],
    };
    try {
      const reply = await get(`/v1/tasks${query(params)}`);
      if (stopped) return;
      fill(problem);
      rows.clear();
      fill(body);
      for (const task of reply.tasks || []) body.append(row(task));
      if (rows.size === 0) body.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No tasks match.")));
      next = reply.next_page_token || "";
      older.disabled = !next;
      newer.disabled = tokens.length === 1;
      fill(pageLabel, `Page ${tokens.length}`);
    } catch (error) {
      if (!stopped) fill(problem, errorBox(error));
    }
  }

  function row(task) {
    const tr = h(
      "tr",
      { dataset: { id: task.id, version: task.version } },
      h("td", { class: "mono" }, h("a", { href: `#/tasks/${encodeURIComponent(task.id)}` }, task.id)),
      h("td", {}, task.type),
      h("td", {}, stateBadge(task.state)),
      h("td", {}, progressBar(percentOf(task), `Progress of ${task.id}`)),
      h("td", {}, `${task.attempt || 0} of ${task.max_attempts || 0}`),
      h("td", {}, when(task.create_time)),
      h("td", {}, labelsText(task.labels)),
    );
    rows.set(task.id, tr);
    return tr;
  }

  // Acting on every task of the tenant takes a filter: a click on an
  // unfiltered list is more likely a slip than a wish.
  function showFilter() {
    const what = filterText();
    for (const button of [cancelMatching, retryMatching]) {
      button.disabled = !what;
      button.title = what ? `Tasks ${what}` : "Filter the list first";
    }
  }

  async function batch(verb) {
    const action = BATCH_ACTIONS[verb];
    if (!window.confirm(action.question(filterText()))) return;
    fill(batchStatus);
    fill(problem);
    try {
      const reply = await post(action.route, { filter: taskFilter() });
      fill(batchStatus, action.outcome(reply));
    } catch (error) {
      fill(problem, errorBox(error));
    }
  }
  cancelMatching.addEventListener("click", () => batch("cancel"));
  retryMatching.addEventListener("click", () => batch("retry"));

  function changed(task) {
    const shown = rows.get(task.id);
    if (shown && Number(shown.dataset.version) >= Number(task.version)) return;
    if (shown && !matches(task)) {
      shown.remove();
      rows.delete(task.id);
    } else if (shown) {
      shown.replaceWith(row(task));
    } else if (tokens.length === 1 && matches(task) && !idInput.value) {
      if (rows.size === 0) fill(body);
      body.prepend(row(task));
      while (rows.size > PAGE_SIZE) {
        const last = body.lastElementChild;
        rows.delete(last.dataset.id);
        last.remove();
      }
    }
  }

  function follow() {
    stopFollowing();
    // No state in the stream's filter: a task leaving the chosen state must
    // be seen leaving, so that its row goes.
    const label = parseLabel(filter.label);
    stopFollowing = followTasks(
      { type: filter.type, labels: label ? [`${label.key}=${label.value}`] : [] },
      { onTask: changed, onReset: load, onPoll: load, onStatus: (s) => fill(status, STATUS_TEXT[s]) },
    );
  }

  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    fill(filterError);
    if (labelInput.value.trim() && !parseLabel(labelInput.value)) {
      fill(filterError, "A label filter reads key=value, such as team=docs.");
      return;
    }
    Object.assign(filter, { state: stateSelect.value, type: typeSelect.value, label: labelInput.value.trim() });
    fill(batchStatus);
    showFilter();
    tokens = [""];
    load();
    follow();
  });
  for (const select of [stateSelect, typeSelect]) {
    select.addEventListener("change", () => filters.requestSubmit());
  }
  search.addEventListener("submit", async (event) => {
    event.preventDefault();
    fill(filterError);
    const id = idInput.value.trim();
    if (!id) return;
    try {
      await get(`/v1/tasks/${encodeURIComponent(id)}`);
      location.hash = `#/tasks/${encodeURIComponent(id)}`;
    } catch (error) {
      fill(filterError, error instanceof ApiError && error.status === 404 ? `No task has the id ${id}.` : error.message);
    }
  });
  older.addEventListener("click", () => {
    if (next) {
      tokens.push(next);
      load();
    }
  });
  newer.addEventListener("click", () => {
    if (tokens.length > 1) {
      tokens.pop();
      load();
    }
  });

  load();
  follow();
  return () => {
    stopped = true;
    stopFollowing();
  };
}
