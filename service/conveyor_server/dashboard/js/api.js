// Calls to the HTTP/JSON API (docs/http.md). With tokens on, the page holds
// a session cookie (HttpOnly: no script reads it) and sends the session's
// CSRF token with every write; the token lives only in this module's memory.

let csrfToken = "";

/** A refusal from the API: its HTTP status and google.rpc.Status. */
export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `the server answered HTTP ${status}`);
    this.status = status;
    this.code = body ? body.code : undefined;
    this.violations = [];
    for (const detail of (body && body.details) || []) {
      for (const violation of detail.field_violations || []) {
        this.violations.push({ field: violation.field || "", description: violation.description || "" });
      }
    }
  }
}

/** Listeners told when a call finds the session gone (401). */
const onUnauthenticated = new Set();
export function whenUnauthenticated(listener) {
  onUnauthenticated.add(listener);
}

export async function call(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { message: text };
  }
  if (!response.ok) {
    const error = new ApiError(response.status, data);
    if (response.status === 401 && path !== "/v1/session") {
      for (const listener of onUnauthenticated) listener(error);
    }
    throw error;
  }
  return data;
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body);
export const patch = (path, body) => call("PATCH", path, body);
export const remove = (path) => call("DELETE", path);

/** The current session: {tenant, csrf_token}, {tenant: ""} when
 * authentication is off, or null when the server wants a login. */
export async function currentSession() {
  try {
    const session = await get("/v1/session");
    csrfToken = session.csrf_token || "";
    return session;
  } catch (error) {
    if (error.status === 401) return null;
    throw error;
  }
}

export async function login(token) {
  const session = await post("/v1/session", { token });
  csrfToken = session.csrf_token || "";
  return session;
}

export async function logout() {
  await call("DELETE", "/v1/session");
  csrfToken = "";
}

/** Query string of a filter: repeated keys for lists. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (Array.isArray(value)) value.forEach((item) => search.append(key, item));
    else if (value !== undefined && value !== null && value !== "") search.append(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}
