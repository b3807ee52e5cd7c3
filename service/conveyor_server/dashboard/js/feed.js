// Following many tasks at once: GET /v1/tasks:watch, WatchTasks as
// Server-Sent Events. Each event carries a task's latest snapshot, and its id
// is the cursor that EventSource sends back as Last-Event-ID when it
// reconnects, so a dropped stream continues where it stopped. A server that
// does not serve the route refuses it, EventSource gives up, and the page
// falls back to polling.

import { query } from "./api.js";

/**
 * followTasks({type, labels}, {onTask, onReset, onPoll, onStatus}, pollSeconds)
 * onTask(task) for each change, onReset() when changes may have been missed
 * (list again), onPoll() on each poll when the stream is refused, and
 * onStatus("live" | "reconnecting" | "polling").
 * Returns a function that stops following.
 */
export function followTasks(filter, handlers, pollSeconds = 3) {
  const { onTask, onReset = () => {}, onPoll, onStatus = () => {} } = handlers;
  let timer = null;
  const poll = () => {
    if (timer === null) {
      onStatus("polling");
      timer = setInterval(onPoll, pollSeconds * 1000);
    }
  };
  const source = new EventSource(`/v1/tasks:watch${query(filter)}`);
  source.onopen = () => onStatus("live");
  source.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.reset) onReset();
    if (message.task) onTask(message.task);
  };
  source.onerror = () => {
    // CONNECTING: EventSource is reconnecting by itself. CLOSED: the server
    // refused the stream (not served, or not allowed), so poll instead.
    if (source.readyState === EventSource.CLOSED) poll();
    else onStatus("reconnecting");
  };
  return () => {
    source.close();
    if (timer !== null) clearInterval(timer);
  };
}

/**
 * refreshOnChange({type, labels}, refresh, everySeconds)
 * Calls refresh() now, soon after each change of a task matching the filter
 * (at most twice a second, however many change), and every everySeconds
 * for what moves with no task changing (workers, fire times, a clock).
 * Returns a function that stops.
 */
export function refreshOnChange(filter, refresh, everySeconds) {
  let pending = null;
  const run = () => {
    pending = null;
    refresh();
  };
  const soon = () => {
    if (pending === null) pending = setTimeout(run, 500);
  };
  run();
  const timer = setInterval(run, everySeconds * 1000);
  const unfollow = followTasks(filter, { onTask: soon, onReset: soon, onPoll: () => {} });
  return () => {
    clearInterval(timer);
    clearTimeout(pending);
    unfollow();
  };
}

export const STATUS_TEXT = {
  live: "Live: updates are pushed by the server.",
  reconnecting: "Reconnecting to the server…",
  polling: "Refreshing every few seconds.",
};
