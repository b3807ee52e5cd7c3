// The overview: counts by state, the throughput chart, a table per task
// type and the live workers. Refreshed when the change feed reports a change
// (at most twice a second) and every 10 seconds for the workers and the
// clock of the chart.

import { get } from "./api.js";
import { refreshOnChange } from "./feed.js";
import { filterByType } from "./tasks.js";
import { STATES, errorBox, fill, h, when } from "./dom.js";

const REFRESH_SECONDS = 10;

export function render(main) {
  const cards = h("div", { class: "cards", id: "counts", "aria-live": "polite" });
  const chart = h("div", { class: "panel", id: "throughput" });
  const types = h("div", { id: "types" });
  const workers = h("div", { id: "workers" });
  const problem = h("div");
  fill(
    main,
    h("h1", {}, "Overview"),
    problem,
    cards,
    h("h2", {}, "Throughput: tasks finished per minute, last hour"),
    chart,
    h("h2", {}, "Task types"),
    types,
    h("p", {}, h("a", { href: "#/types" }, "Limits and pausing of each type")),
    h("h2", {}, "Workers"),
    workers,
  );
  let plot = null;
  let stopped = false;

  async function refresh() {
    try {
      const [stats, typeList, workerList] = await Promise.all([
        get("/v1/stats"),
        get("/v1/taskTypes"),
        get("/v1/workers"),
      ]);
      if (stopped) return;
      fill(problem);
      showCounts(cards, stats);
      plot = showThroughput(chart, plot, stats.throughput);
      showTypes(types, stats.types || {}, typeList.task_types || []);
      showWorkers(workers, workerList.workers || []);
    } catch (error) {
      if (!stopped) fill(problem, errorBox(error));
    }
  }
  const stopRefreshing = refreshOnChange({}, refresh, REFRESH_SECONDS);
  return () => {
    stopped = true;
    stopRefreshing();
    if (plot) plot.destroy();
  };
}

function showCounts(cards, stats) {
  const counts = stats.counts || {};
  const card = (label, value, id) =>
    h("div", { class: "card", id }, h("div", { class: "muted" }, label), h("div", { class: "number" }, value));
  fill(
    cards,
    STATES.map((state) => card(state, counts[`TASK_STATE_${state}`] || 0, `count-${state}`)),
    card("Queue depth", stats.queue_depth || 0, "count-queue"),
  );
  if (stats.complete === false) {
    cards.append(h("p", { class: "muted" }, `Counted from the newest ${stats.counted} tasks.`));
  }
}

function showThroughput(element, plot, throughput) {
  const finished = (throughput && throughput.finished) || [];
  const start = throughput && throughput.start_time ? Date.parse(throughput.start_time) / 1000 : Date.now() / 1000;
  const step = (throughput && throughput.bucket_seconds) || 60;
  const data = [finished.map((_, index) => start + index * step), finished.map(Number)];
  const total = data[1].reduce((sum, value) => sum + value, 0);
  element.setAttribute("role", "img");
  element.setAttribute("aria-label", `${total} tasks finished in the last hour`);
  if (typeof window.uPlot !== "function") {
    fill(element, `${total} tasks finished in the last hour.`);
    return null;
  }
  if (plot) {
    plot.setData(data);
    return plot;
  }
  fill(element);
  const options = {
    width: Math.max(320, element.clientWidth - 32),
    height: 220,
    legend: { show: false },
    scales: { x: { time: true }, y: { range: (_, min, max) => [0, Math.max(5, max)] } },
    series: [{}, { label: "finished", stroke: "#2f5fd0", fill: "rgba(47, 95, 208, 0.15)", width: 2 }],
    axes: [{}, { label: "per minute" }],
  };
  return new window.uPlot(options, data, element);
}

function showTypes(element, counts, typeList) {
  const names = new Set([...Object.keys(counts), ...typeList.map((type) => type.name)]);
  const workersOf = Object.fromEntries(typeList.map((type) => [type.name, type.workers || 0]));
  const rows = [...names].sort().map((name) =>
    h(
      "tr",
      {},
      h("th", { scope: "row" }, h("a", { href: "#/tasks", onclick: () => filterByType(name) }, name)),
      h("td", {}, workersOf[name] ?? 0),
      STATES.map((state) => h("td", {}, (counts[name] || {})[`TASK_STATE_${state}`] || 0)),
    ),
  );
  fill(
    element,
    h(
      "table",
      { "aria-label": "Tasks by type and state" },
      h("thead", {}, h("tr", {}, h("th", {}, "Type"), h("th", {}, "Workers"), STATES.map((s) => h("th", {}, s)))),
      h("tbody", {}, rows),
    ),
  );
}

function showWorkers(element, workers) {
  if (workers.length === 0) {
    fill(element, h("p", { class: "muted" }, "No live workers."));
    return;
  }
  fill(
    element,
    h(
      "table",
      { "aria-label": "Live workers" },
      h(
        "thead",
        {},
        h("tr", {}, ["Worker", "Host", "Task types", "Threads", "Running", "Started", "Last heartbeat"].map((t) => h("th", {}, t))),
      ),
      h(
        "tbody",
        {},
        workers.map((worker) =>
          h(
            "tr",
            {},
            h("td", { class: "mono" }, worker.id),
            h("td", {}, `${worker.host} (pid ${worker.pid})`),
            h("td", {}, (worker.task_types || []).join(", ")),
            h("td", {}, worker.threads || 0),
            h("td", {}, worker.running || 0),
            h("td", {}, when(worker.start_time)),
            h("td", {}, when(worker.heartbeat_time)),
          ),
        ),
      ),
    ),
  );
}
