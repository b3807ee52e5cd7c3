// The login page, shown when the server has tokens on and the page has no
// session: the token is sent once, and the server answers with an HttpOnly
// session cookie.

import { login } from "./api.js";
import { h, fill } from "./dom.js";

export function render(main, onLoggedIn) {
  const error = h("p", { class: "field-error", id: "login-error", role: "alert" });
  const token = h("input", {
    id: "token",
    name: "token",
    type: "password",
    autocomplete: "current-password",
    required: true,
    "aria-describedby": "login-error",
  });
  const form = h(
    "form",
    { class: "form", "aria-label": "Log in" },
    h("div", { class: "field" }, h("label", { for: "token" }, "Token"), token, error),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Log in")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    fill(error);
    try {
      const session = await login(token.value);
      token.value = "";
      onLoggedIn(session);
    } catch (failure) {
      fill(error, failure.message);
      token.focus();
    }
  });
  fill(
    main,
    h("h1", {}, "Log in"),
    h("p", { class: "muted" }, "This server requires a token. Your session lasts 12 hours."),
    form,
  );
  token.focus();
  return () => {};
}
