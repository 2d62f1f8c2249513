// Perennial in the browser: one agent over the gateway's WebSocket, and its HTTP routes.
// An ES module with no dependencies (import it from /static/perennial.js).
//
//   import { connectAgent } from "/static/perennial.js";
//   const agent = connectAgent({ type: "notes", name: "alice", onState: (s, v) => render(s, v) });
//   const { reply } = await agent.ask("remember the milk");
//   await agent.ask("tell me a story", { onDelta: (text) => show(text) });  // as it is written
//   await agent.stop();                                                      // stop the turn
//
// The socket sends the agent's state (then RFC 6902 patches per committed version) and its
// events; requests (ask, send, call) carry an id that is also the message id, so a request
// resent after a reconnect is applied once (a streamed ask goes on after its last item).

/** A failure from the gateway or the agent: `name` is the server's error type
 *  ("AgentNotFound", "TurnFailed", "TooManyUnapplied", ...), or one of this module's:
 *  "GatewayUnreachable", "RequestTimedOut", "ConnectionClosed", "PatchError". */
export class GatewayError extends Error {
  constructor(type, message, { status, id, retryAfter, details } = {}) {
    super(message);
    this.name = type;
    this.status = status; // HTTP status (or the socket's, where the server gives one)
    this.id = id; // the request (message) id, when the error answers a request
    this.retryAfter = retryAfter; // seconds, for "come back later" errors (429)
    this.details = details ?? {}; // the rest of the server's error body
  }
}

function errorFrom(body, { status: fallbackStatus, retryAfter, id: requestId } = {}) {
  const { type = "InternalError", message = "the gateway failed", status, id, ...details } =
    body ?? {};
  const retry = retryAfter ?? details.retry_after;
  return new GatewayError(type, message, {
    status: status ?? fallbackStatus,
    id: id ?? requestId,
    retryAfter: retry == null ? undefined : Number(retry),
    details,
  });
}

// --------------------------------------------------------------------------- HTTP

/** One HTTP route as JSON: `fetchJSON("/agents?type=notes", { token })`, or with a body
 *  (POST unless `method` says otherwise). Rejects with a GatewayError. */
export async function fetchJSON(path, { base = location.origin, token, method, body, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(joinURL(base, path), {
      method: method ?? (body === undefined ? "GET" : "POST"),
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new GatewayError("GatewayUnreachable", `no answer from ${base}: ${err.message}`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // not JSON (a proxy's error page): the status says what happened
  }
  if (!response.ok) {
    throw errorFrom(
      data?.error ?? { type: "HTTPError", message: `${response.status} ${text.slice(0, 200)}` },
      { status: response.status, retryAfter: response.headers.get("Retry-After") ?? undefined },
    );
  }
  return data;
}

/** The path of an agent's route: agentPath("notes", "a/b", "ws") is "/agents/notes/a%2Fb/ws". */
export function agentPath(type, name, rest = "") {
  const path = `/agents/${encodeURIComponent(type)}/${encodeURIComponent(name)}`;
  return rest ? `${path}/${rest}` : path;
}

// base may carry a path prefix (a gateway behind a proxy under /perennial/): keep it.
function joinURL(base, path) {
  return new URL(String(base).replace(/\/+$/, "") + path);
}

// --------------------------------------------------------------------------- JSON Patch

export class PatchError extends GatewayError {
  constructor(message) {
    super("PatchError", message);
  }
}

/** RFC 6902: `doc` with `ops` applied (add, remove, replace, move, copy, test), as a new
 *  value; `doc` is left as it was, also when an op fails (PatchError). */
export function applyPatch(doc, ops) {
  let root = clone(doc);
  for (const op of ops) root = applyOp(root, op);
  return root;
}

function applyOp(root, op) {
  const path = parsePointer(op.path);
  switch (op.op) {
    case "add":
      return add(root, path, clone(op.value));
    case "remove":
      return remove(root, path).root;
    case "replace":
      return replace(root, path, clone(op.value));
    case "move": {
      const from = parsePointer(op.from);
      if (from.length < path.length && from.every((token, i) => token === path[i])) {
        throw new PatchError(`cannot move ${op.from} into its own child ${op.path}`);
      }
      const removed = remove(root, from);
      return add(removed.root, path, removed.value);
    }
    case "copy":
      return add(root, path, clone(get(root, parsePointer(op.from))));
    case "test":
      if (!same(get(root, path), op.value)) throw new PatchError(`test failed at ${op.path}`);
      return root;
    default:
      throw new PatchError(`unknown op ${JSON.stringify(op.op)}`);
  }
}

/** RFC 6901: "/a~1b/0" is ["a/b", "0"]; "" is the whole document. */
export function parsePointer(pointer) {
  if (pointer === "") return [];
  if (typeof pointer !== "string" || pointer[0] !== "/" || /~(?![01])/.test(pointer)) {
    throw new PatchError(`not a JSON Pointer: ${JSON.stringify(pointer)}`);
  }
  // ~1 first: "~01" is the token "~1", not "/"
  return pointer.slice(1).split("/").map((t) => t.replace(/~1/g, "/").replace(/~0/g, "~"));
}

function add(root, path, value) {
  if (path.length === 0) return value;
  const { parent, key } = locate(root, path);
  if (Array.isArray(parent)) {
    parent.splice(key === "-" ? parent.length : arrayIndex(key, parent.length), 0, value);
  } else {
    setOwn(parent, key, value);
  }
  return root;
}

function remove(root, path) {
  if (path.length === 0) throw new PatchError("cannot remove the whole document");
  const { parent, key } = locate(root, path);
  if (Array.isArray(parent)) {
    const [value] = parent.splice(arrayIndex(key, parent.length - 1), 1);
    return { root, value };
  }
  const value = member(parent, key);
  delete parent[key];
  return { root, value };
}

function replace(root, path, value) {
  if (path.length === 0) return value;
  const { parent, key } = locate(root, path);
  if (Array.isArray(parent)) parent[arrayIndex(key, parent.length - 1)] = value;
  else {
    member(parent, key); // must exist
    setOwn(parent, key, value);
  }
  return root;
}

function get(root, path) {
  return path.reduce((node, key) => child(node, key), root);
}

// The container the path's last token points into, and that token.
function locate(root, path) {
  const parent = get(root, path.slice(0, -1));
  if (parent === null || typeof parent !== "object") {
    throw new PatchError(`/${path.slice(0, -1).join("/")} is not an object or array`);
  }
  return { parent, key: path[path.length - 1] };
}

function child(node, key) {
  if (Array.isArray(node)) return node[arrayIndex(key, node.length - 1)];
  if (node !== null && typeof node === "object") return member(node, key);
  throw new PatchError(`cannot look up ${JSON.stringify(key)} in a ${typeof node}`);
}

function member(object, key) {
  if (!Object.hasOwn(object, key)) throw new PatchError(`no member ${JSON.stringify(key)}`);
  return object[key];
}

function arrayIndex(key, max) {
  if (!/^(0|[1-9][0-9]*)$/.test(key) || Number(key) > max) {
    throw new PatchError(`bad array index ${JSON.stringify(key)} (0..${max})`);
  }
  return Number(key);
}

// Plain assignment of "__proto__" would set the object's prototype, not a member.
function setOwn(object, key, value) {
  Object.defineProperty(object, key, { value, writable: true, enumerable: true, configurable: true });
}

// A JSON round trip: the copy has own members only, "__proto__" included.
function clone(value) {
  return value === undefined ? undefined : JSON.parse(JSON.stringify(value));
}

function same(a, b) {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length &&
    keys.every((k) => Object.hasOwn(b, k) && same(a[k], b[k]));
}

// --------------------------------------------------------------------------- the socket

/** A random UUID (v4): a request's id, which is also its message id. */
export function newId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  // randomUUID needs a secure context (https, localhost); a gateway on http://<LAN address> is not
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// Close codes after which reconnecting cannot help.
const FATAL_CLOSE = { 4400: "InvalidRequest", 4401: "Unauthorized", 4403: "Forbidden", 4404: "UnknownAgentType" };
// Time, beyond an ask's own timeout, for the server's typed timeout error to arrive first.
const GRACE_MS = 5000;

/** Follow one agent and talk to it over its WebSocket; see AgentConnection. */
export function connectAgent(options) {
  return new AgentConnection(options);
}

/**
 * One agent over the gateway's WebSocket, reconnecting until `close()`.
 *
 * `state` and `version` are the agent's last committed state (null and 0 while it does not
 * exist); `lastOffset` is the offset of the last event delivered (`after`: 0 delivers every
 * event the agent's log still holds, null only those from now on). `status` is "connecting",
 * "live", "reconnecting" or "closed".
 *
 * Callbacks: onState(state, version), onEvent(event) (each offset once, in order),
 * onStatus(status, detail), onMissed({missed, resume_after}) (events that left the agent's
 * bounded log unread), onError(GatewayError) (unsolicited errors, and why it closed).
 */
export class AgentConnection {
  constructor({
    type, name, base = location.origin, token, after = 0,
    onState, onEvent, onStatus, onMissed, onError,
    backoff = { initialMs: 250, maxMs: 10000 },
  }) {
    if (!type || !name) throw new TypeError("connectAgent needs a type and a name");
    Object.assign(this, { type, name, base, token, backoff });
    this.callbacks = { onState, onEvent, onStatus, onMissed, onError };
    this.state = null;
    this.version = 0;
    this.lastOffset = after;
    this.status = "idle";
    this._pending = new Map(); // request id -> {frame, resolve, reject, deadline, timer}
    this._attempt = 0;
    this._socket = null;
    this._retry = null;
    this._setStatus("connecting", {});
    this._open();
  }

  /** Ask the agent: resolves to {id, reply, version} once its turn is committed.
   *  opts: sender, data, id (to retry a request), timeout (seconds, default 60), onBusy
   *  (what the message does if a turn runs: "queue", "interrupt", "steer", "merge",
   *  "reject"). Streamed (`stream: true`, or given onDelta / onItem): onItem(item) gets each
   *  item as it comes ({type: "delta" | "restart" | "tool_call" | "tool_result", ...}; a
   *  "restart" voids its step's text so far), onDelta(text, item) each delta's text. */
  ask(text, { sender, data, id, timeout = 60, onBusy, stream, onDelta, onItem } = {}) {
    const streamed = Boolean(stream || onDelta || onItem);
    const each = (item) => {
      onItem?.(item);
      if (item.type === "delta") onDelta?.(item.text, item);
    };
    const frame = { type: "ask", id, text, sender, data, on_busy: onBusy, stream: streamed || undefined };
    return this._request(frame, timeout, true, streamed ? each : undefined);
  }

  /** Put a message into the agent's inbox: resolves to {id} once it is accepted. */
  send(text, { sender, data, id, timeout = 60, onBusy } = {}) {
    return this._request({ type: "send", id, text, sender, data, on_busy: onBusy }, timeout, false);
  }

  /** Stop the turn the agent is running (only if it is the ask `turn`, when given): resolves
   *  to {id, stopped, turn, version} once it has ended; its ask rejects with "TurnStopped". */
  stop({ reason, turn, timeout = 60 } = {}) {
    return this._request({ type: "stop", reason, turn }, timeout, false);
  }

  /** Call a callable method: resolves to {id, method, result, version}. */
  call(method, args = {}, { sender, id, timeout = 60 } = {}) {
    return this._request({ type: "call", id, method, args, sender }, timeout, true);
  }

  /** Stop for good: the socket closes, and requests still waiting reject ("ConnectionClosed"). */
  close() {
    if (this.status === "closed") return;
    clearTimeout(this._retry);
    const socket = this._socket;
    this._socket = null;
    socket?.close(1000, "closed by the client");
    this._fail(new GatewayError("ConnectionClosed", "the connection was closed"));
    this._setStatus("closed", {});
  }

  // ------------------------------------------------------------------ connecting

  _url() {
    const url = joinURL(this.base, agentPath(this.type, this.name, "ws"));
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    if (this.lastOffset != null) url.searchParams.set("after", String(this.lastOffset));
    if (this.token) url.searchParams.set("access_token", this.token);
    return url;
  }

  _open() {
    const socket = new WebSocket(this._url());
    this._socket = socket;
    socket.onopen = () => {
      for (const entry of this._pending.values()) this._transmit(entry);
    };
    socket.onmessage = (e) => {
      if (socket === this._socket) this._receive(JSON.parse(e.data));
    };
    socket.onclose = (e) => {
      if (socket === this._socket) this._closed(e);
    };
  }

  _closed({ code, reason }) {
    this._socket = null;
    const fatal = FATAL_CLOSE[code];
    if (fatal) {
      // the server's reason reads "Type: message"
      const error = new GatewayError(fatal, reason.replace(/^\w+: /, "") || fatal, { status: code });
      this._fail(error);
      this.callbacks.onError?.(error);
      this._setStatus("closed", { code, reason });
      return;
    }
    // Exponential, capped, with jitter so many pages do not come back all at once.
    const ceiling = Math.min(this.backoff.maxMs, this.backoff.initialMs * 2 ** this._attempt);
    const delay = ceiling / 2 + (Math.random() * ceiling) / 2;
    this._attempt += 1;
    this._setStatus("reconnecting", { code, reason, delay });
    this._retry = setTimeout(() => this._open(), delay);
  }

  // Drop the socket and connect again now: the server's first message is a full state.
  _resync() {
    const socket = this._socket;
    if (!socket) return;
    this._socket = null;
    socket.close(4000, "resync");
    this._attempt = 0;
    this._setStatus("reconnecting", { reason: "resync" });
    this._open();
  }

  _setStatus(status, detail) {
    if (status === this.status && status !== "reconnecting") return;
    this.status = status;
    this.callbacks.onStatus?.(status, detail);
  }

  // ------------------------------------------------------------------ receiving

  _receive(message) {
    switch (message.type) {
      case "state":
        this._attempt = 0;
        this._adopt(message.state, message.version);
        this._setStatus("live", {});
        return;
      case "patch":
        if (message.version <= this.version) return; // stale: this version is here already
        if (message.from_version !== this.version) {
          this._resync(); // a version went by unseen: start again from a full state
          return;
        }
        try {
          this._adopt(applyPatch(this.state, message.ops), message.version);
        } catch (err) {
          this.callbacks.onError?.(err);
          this._resync();
        }
        return;
      case "event":
        if (message.event.offset <= this.lastOffset) return; // already delivered
        this.lastOffset = message.event.offset;
        this.callbacks.onEvent?.(message.event);
        return;
      case "events_missed":
        this.lastOffset = Math.max(this.lastOffset ?? 0, message.resume_after);
        this.callbacks.onMissed?.(message);
        return;
      case "error":
        this._answerError(message);
        return;
      case "delta":
      case "restart":
      case "tool_call":
      case "tool_result":
        this._streamed(message);
        return;
      default: // reply, accepted, result, stopped
        this._settle(message.id, null, message);
    }
  }

  // An item of a streamed ask; its position is where a resent ask goes on from.
  _streamed(item) {
    const entry = this._pending.get(item.id);
    if (!entry?.onItem) return;
    const { offset, step, attempt, chars } = item.position;
    entry.resume = `${offset}.${step}.${attempt}.${chars}`;
    entry.onItem(item);
  }

  _adopt(state, version) {
    this.state = state;
    this.version = version;
    this.callbacks.onState?.(state, version);
  }

  _answerError(message) {
    const error = errorFrom(message.error, { id: message.id });
    const entry = message.id == null ? undefined : this._pending.get(message.id);
    if (!entry) {
      this.callbacks.onError?.(error);
      return;
    }
    // "Come back later" (the agent is behind): resend the same id then, if time allows.
    const wait = error.retryAfter * 1000;
    if (wait >= 0 && Date.now() + wait < entry.deadline) {
      setTimeout(() => this._transmit(entry), wait);
      return;
    }
    this._settle(message.id, error);
  }

  // ------------------------------------------------------------------ requests

  _request(fields, timeoutSeconds, waitsForTurn, onItem) {
    if (this.status === "closed") {
      return Promise.reject(new GatewayError("ConnectionClosed", "the connection was closed"));
    }
    const frame = Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined));
    frame.id ??= newId();
    // The same id again while it waits is the same request: one answer for both.
    const waiting = this._pending.get(frame.id);
    if (waiting) return waiting.promise;
    let entry;
    const promise = new Promise((resolve, reject) => {
      const ms = timeoutSeconds * 1000 + (waitsForTurn ? GRACE_MS : 0);
      entry = { frame, resolve, reject, deadline: Date.now() + ms, waitsForTurn, onItem };
      entry.timer = setTimeout(() => {
        const error = new GatewayError(
          "RequestTimedOut",
          `no answer to ${frame.type} ${frame.id} within ${timeoutSeconds} s; it may still be ` +
            "applied: repeat it with the same id to learn its outcome",
          { id: frame.id },
        );
        this._settle(frame.id, error);
      }, ms);
    });
    entry.promise = promise;
    this._pending.set(frame.id, entry);
    this._transmit(entry);
    return promise;
  }

  // Send a request now if the socket is open; otherwise onopen sends it.
  _transmit(entry) {
    if (!this._pending.has(entry.frame.id) || this._socket?.readyState !== WebSocket.OPEN) return;
    const frame = { ...entry.frame };
    if (entry.waitsForTurn) {
      // The server waits what is left of the caller's timeout, so its own error comes first.
      frame.timeout = Math.max(0.1, (entry.deadline - GRACE_MS - Date.now()) / 1000);
    }
    if (entry.resume) frame.resume = entry.resume; // nothing delivered is sent again
    this._socket.send(JSON.stringify(frame));
  }

  _settle(id, error, value) {
    const entry = this._pending.get(id);
    if (!entry) return; // answered already (a resent request), or timed out
    this._pending.delete(id);
    clearTimeout(entry.timer);
    if (error) entry.reject(error);
    else {
      const { type, ...answer } = value;
      entry.resolve(answer);
    }
  }

  _fail(error) {
    for (const id of [...this._pending.keys()]) this._settle(id, error);
  }
}
