// Shared by the pages: API keys kept in sessionStorage (gone when the tab closes), calls to
// the key-protected JSON APIs, and small DOM builders. Every value from the API reaches the
// page through textContent or an attribute, never as HTML: traits and event properties are
// written by browsers holding public write keys.

const STORAGE = { tenant: "stratum.tenantKey", operator: "stratum.operatorKey" };

export function getKey(kind) {
  return sessionStorage.getItem(STORAGE[kind]) || "";
}

export function setKey(kind, key) {
  if (key) sessionStorage.setItem(STORAGE[kind], key);
  else sessionStorage.removeItem(STORAGE[kind]);
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// fetch a JSON API with the stored key of `kind` as Bearer; throws ApiError on non-2xx.
export async function apiFetch(kind, path, options = {}) {
  const key = getKey(kind);
  if (!key) throw new ApiError(401, "missing_api_key", `enter ${kind === "operator" ? "an operator" : "a tenant"} API key first`);
  const headers = { Accept: "application/json", Authorization: `Bearer ${key}`, ...(options.headers || {}) };
  let response;
  try {
    response = await fetch(path, { ...options, headers, cache: "no-store" });
  } catch (err) {
    throw new ApiError(0, "network_error", `the read API did not answer (${err.message})`);
  }
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!response.ok) {
    throw new ApiError(response.status, body?.code || "http_error", body?.message || `HTTP ${response.status}`);
  }
  return body;
}

// el("td", {class: "num", title: "x"}, "text", childNode, ...): an element; strings become text nodes.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function clear(node) {
  node.replaceChildren();
  return node;
}

export function showMessage(node, text, kind = "error") {
  node.textContent = text;
  node.className = `message ${kind}`;
  node.hidden = !text;
}

// The last n characters: ids here are UUIDv7, whose leading characters are a timestamp
// shared by everything created in the same minute; the tail is random.
export function shortId(value, n = 8) {
  return value ? `…${String(value).slice(-n)}` : "";
}

export function formatTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

// Wires a key form (<form id=key-form> with <input name=key>, a "forget" button and a status
// line) to sessionStorage; onChange runs after a key is saved or forgotten.
export function bindKeyForm(kind, onChange) {
  const form = document.getElementById("key-form");
  const input = form.elements.key;
  const status = document.getElementById("key-status");
  const render = () => {
    const has = Boolean(getKey(kind));
    status.textContent = has ? "key set for this tab" : "no key";
    status.className = has ? "key-status ok" : "key-status";
    input.value = "";
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    setKey(kind, input.value.trim());
    render();
    onChange();
  });
  document.getElementById("key-forget").addEventListener("click", () => {
    setKey(kind, "");
    render();
    onChange();
  });
  render();
}
