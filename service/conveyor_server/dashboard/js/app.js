// The dashboard's entry point: the session, the navigation and the router.
// Pages live in the URL's fragment (#/tasks/ID), so the server serves one
// page at / and every link still works on reload.

import { currentSession, logout, whenUnauthenticated } from "./api.js";
import { errorBox, fill, h } from "./dom.js";
import * as loginPage from "./login.js";
import * as overviewPage from "./overview.js";
import * as schedulePage from "./schedule.js";
import * as schedulesPage from "./schedules.js";
import * as submitPage from "./submit.js";
import * as taskPage from "./task.js";
import * as tasksPage from "./tasks.js";
import * as typesPage from "./types.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
let leavePage = () => {};
let routing = false;

const ROUTES = [
  [/^#?\/?$/, () => overviewPage.render(main)],
  [/^#\/tasks$/, () => tasksPage.render(main)],
  [/^#\/tasks\/([^/]+)$/, (id) => taskPage.render(main, decodeURIComponent(id))],
  [/^#\/submit$/, () => submitPage.render(main)],
  [/^#\/types$/, () => typesPage.render(main)],
  [/^#\/schedules$/, () => schedulesPage.render(main)],
  [/^#\/schedules\/([^/]+)$/, (id) => schedulePage.render(main, decodeURIComponent(id))],
];

function route() {
  leavePage();
  leavePage = () => {};
  const hash = location.hash || "#/";
  for (const link of nav.querySelectorAll("a")) {
    const current = link.getAttribute("href");
    const here = current === "#/" ? hash === "#/" : hash.startsWith(current);
    if (here) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  for (const [pattern, show] of ROUTES) {
    const match = hash.match(pattern);
    if (match) {
      leavePage = show(...match.slice(1));
      return;
    }
  }
  fill(main, h("h1", {}, "Not found"), h("p", {}, "No such page. ", h("a", { href: "#/" }, "Overview")));
}

function showSession(session) {
  nav.hidden = false;
  if (session.tenant) {
    fill(
      who,
      h("span", { id: "tenant" }, `Tenant: ${session.tenant}`),
      h("button", { type: "button", id: "logout", onclick: signOut }, "Log out"),
    );
  } else {
    fill(who);
  }
  if (!routing) {
    routing = true;
    window.addEventListener("hashchange", route);
  }
  route();
}

function showLogin() {
  leavePage();
  leavePage = () => {};
  nav.hidden = true;
  fill(who);
  loginPage.render(main, showSession);
}

async function signOut() {
  try {
    await logout();
  } finally {
    showLogin();
  }
}

async function boot() {
  whenUnauthenticated(showLogin);
  let session;
  try {
    session = await currentSession();
  } catch (error) {
    fill(main, errorBox(error));
    return;
  }
  if (session === null) showLogin();
  else showSession(session);
}

boot();
