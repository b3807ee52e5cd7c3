// The Logs panel of a task page: the lines the task's handler wrote through
// ctx.logger, from GET /v1/tasks/{id}/logs. The page token continues after
// the last line shown, and the server sets it while the task is unfinished,
// so the panel reads again with it every POLL_SECONDS until it comes back
// empty: then every line of the finished task is shown.

import { get } from "./api.js";
import { errorBox, fill, h } from "./dom.js";

const POLL_SECONDS = 1;

/** Show the task's lines in `element` and follow them; returns a stop function. */
export function followLogs(element, id) {
  const lines = h("ol", { class: "log-lines", id: "task-logs", "aria-label": "Log lines" });
  const status = h("p", { class: "muted", id: "task-logs-status" }, "Loading…");
  const dropped = h("p", { class: "notice", id: "task-logs-dropped", hidden: true });
  fill(element, dropped, lines, status);
  let token = "";
  let timer = null;
  let stopped = false;

  async function read() {
    timer = null;
    let reply;
    try {
      const query = token ? `?page_token=${encodeURIComponent(token)}` : "";
      reply = await get(`/v1/tasks/${encodeURIComponent(id)}/logs${query}`);
    } catch (error) {
      if (!stopped) fill(status, errorBox(error));
      return;
    }
    if (stopped) return;
    for (const line of reply.lines || []) lines.append(row(line));
    showDropped(dropped, reply.dropped || []);
    const count = lines.children.length;
    token = reply.next_page_token || "";
    if (!token) {
      fill(status, count ? `${count} lines.` : "This task logged nothing.");
      return;
    }
    fill(status, count ? "Following: new lines appear as they are logged." : "No lines yet; following.");
    // A full page may have more behind it at once; otherwise wait for new lines.
    timer = setTimeout(read, (reply.lines || []).length >= 100 ? 0 : POLL_SECONDS * 1000);
  }

  read();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

function row(line) {
  const time = line.time ? new Date(line.time).toLocaleTimeString() : "";
  return h(
    "li",
    { dataset: { attempt: line.attempt, sequence: line.sequence, level: line.level } },
    h("span", { class: "muted" }, `${time} #${line.attempt} `),
    h("strong", {}, line.level),
    " ",
    h("span", { class: "mono" }, line.message),
  );
}

function showDropped(element, dropped) {
  element.hidden = dropped.length === 0;
  const words = dropped.map((d) => `attempt ${d.attempt}: ${d.lines} earliest lines dropped`);
  fill(element, words.length ? `Only the latest lines of each attempt are kept (${words.join("; ")}).` : "");
}
