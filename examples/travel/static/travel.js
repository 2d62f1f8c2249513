// The travel planner's page: chat through POST /chat, and the session's agents followed live
// over the gateway's WebSocket (/static/perennial.js): the trip and the itinerary come from the
// travel agent's state patches, the transcript from the conversation agent's. The session id
// lives in the URL (#s=<id>), so a reload or a shared link follows the same trip.

import { agentPath, connectAgent, fetchJSON } from "/static/perennial.js";

const $ = (id) => document.getElementById(id);
const connections = [];
let plan = null; // the travel agent's last state
let sessionId = new URLSearchParams(location.hash.slice(1)).get("s");
let refreshing = null;

function el(tag, { text, cls, attrs } = {}, children = []) {
  const node = document.createElement(tag);
  if (text != null) node.textContent = text;
  if (cls) node.className = cls;
  for (const [name, value] of Object.entries(attrs ?? {})) node.setAttribute(name, value);
  for (const child of children) node.append(child);
  return node;
}

function link(url, text) {
  if (!/^https?:\/\//.test(url ?? "")) return el("span", { text: text ?? "" });
  return el("a", { text: text ?? url, attrs: { href: url, target: "_blank", rel: "noopener" } });
}

function fill(list, items, render, empty) {
  list.replaceChildren(...(items.length ? items.map(render) : [el("li", { text: empty, cls: "empty" })]));
}

function showError(err) {
  $("error").textContent = err ? `${err.name}: ${err.message}` : "";
}

// --------------------------------------------------------------------------- rendering

const SLOTS = [
  ["destination", "Destination"], ["origin", "From"], ["start_date", "From date"],
  ["end_date", "To date"], ["travellers", "Travellers"], ["budget", "Budget"],
  ["preferences", "Preferences"],
];

function renderTrip(state, version) {
  plan = state;
  $("travel-version").textContent = String(version);
  const trip = state?.trip ?? {};
  const rows = [];
  for (const [key, label] of SLOTS) {
    let value = trip[key];
    if (key === "budget" && value != null) value = `${value} ${trip.currency ?? ""}`;
    if (Array.isArray(value)) value = value.join(", ") || null;
    rows.push(el("dt", { text: label }));
    rows.push(el("dd", { text: value ?? "?", cls: value == null ? "missing" : "", attrs: { "data-slot": key } }));
  }
  $("trip").replaceChildren(...rows);
  fill($("itinerary"), state?.itinerary ?? [], (item) => {
    const price = item.price != null ? ` · ${item.price} ${item.currency ?? ""}` : "";
    return el("li", { attrs: { "data-item": item.id } }, [
      el("strong", { text: `${item.day ?? ""} ${item.title}`.trim() }),
      el("span", { text: ` (${item.kind}${price}) ` }),
      item.booked ? el("span", { text: `booked ${item.booking_ref} `, cls: "booked" }) : "",
      link(item.source, "source"),
    ]);
  }, "nothing planned yet");
  fill($("notices"), state?.notices ?? [], (n) =>
    el("li", { text: `${n.kind}: ${n.text}` }), "none");
}

function renderTranscript(state) {
  const summary = state?.summary;
  $("summary").hidden = !summary;
  $("summary").textContent = summary ? `Earlier: ${summary}` : "";
  const turns = [];
  for (const turn of state?.transcript ?? []) {
    turns.push(el("li", { cls: "traveller" }, [el("span", { text: "You", cls: "who" }), turn.user]));
    const routed = turn.routed_to?.length ? ` (via ${turn.routed_to.join(", ")})` : "";
    turns.push(el("li", { cls: "planner", attrs: { "data-message": turn.message_id } }, [
      el("span", { text: "Planner", cls: "who" }), turn.reply ?? "(no answer)",
      el("span", { text: routed, cls: "routed" }),
    ]));
  }
  fill($("transcript"), turns, (node) => node, "say hello");
}

// What a call waiting for approval does, in words: "Book it-2: Hotel Alfama, 3 nights".
function describeCall(approval) {
  let args = {};
  try { args = JSON.parse(approval.arguments); } catch { /* shown as it is below */ }
  const item = (plan?.itinerary ?? []).find((i) => i.id === args.item_id);
  if (approval.tool === "book" && args.item_id) return `Book ${args.item_id}${item ? `: ${item.title}` : ""}`;
  return `${approval.tool} ${approval.arguments}`;
}

function renderSideLists(view) {
  fill($("approvals"), view.approvals ?? [], (a) => {
    const decide = (approve) => async () => {
      try {
        await fetchJSON(agentPath("travel", sessionId, `approvals/${encodeURIComponent(a.approval_id)}`),
          { body: { approve } });
        scheduleRefresh();
      } catch (err) { showError(err); }
    };
    const yes = el("button", { text: "Approve", attrs: { "data-approve": a.approval_id, type: "button" } });
    const no = el("button", { text: "Reject", attrs: { "data-reject": a.approval_id, type: "button" } });
    yes.onclick = decide(true);
    no.onclick = decide(false);
    return el("li", { attrs: { "data-approval": a.approval_id } }, [`${describeCall(a)} `, yes, " ", no]);
  }, "nothing");
  fill($("reminders"), view.reminders ?? [], (r) =>
    el("li", { text: `${new Date(r.next_due).toLocaleString()}: ${r.payload}`, attrs: { "data-reminder": r.id } }),
    "none");
}

// --------------------------------------------------------------------------- the session

async function refresh() {
  if (!sessionId) return;
  try {
    renderSideLists(await fetchJSON(`/state?sessionId=${encodeURIComponent(sessionId)}`));
  } catch (err) {
    if (err.name !== "SessionNotFound") showError(err);
  }
}

function scheduleRefresh() {
  clearTimeout(refreshing);
  refreshing = setTimeout(refresh, 150);
}

function follow() {
  for (const c of connections.splice(0)) c.close();
  $("session").textContent = `session ${sessionId}`;
  $("session").dataset.session = sessionId;
  const onStatus = (status) => { $("live").dataset.status = status; };
  connections.push(connectAgent({
    type: "travel", name: sessionId, after: null, onStatus,
    onState: (state, version) => { renderTrip(state, version); scheduleRefresh(); },
    onEvent: scheduleRefresh,
  }));
  connections.push(connectAgent({
    type: "conversation", name: sessionId, after: null,
    onState: (state) => renderTranscript(state),
  }));
  scheduleRefresh();
}

$("chat-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("message").value.trim();
  if (!text) return;
  $("message").value = "";
  $("send").disabled = true;
  showError(null);
  try {
    const answer = await fetchJSON("/chat", { body: { message: text, sessionId: sessionId ?? undefined } });
    if (answer.sessionId !== sessionId) {
      sessionId = answer.sessionId;
      history.replaceState(null, "", `#s=${encodeURIComponent(sessionId)}`);
      follow();
    }
  } catch (err) {
    showError(err);
  } finally {
    $("send").disabled = false;
  }
});

$("new-session").addEventListener("click", () => {
  for (const c of connections.splice(0)) c.close();
  sessionId = null;
  history.replaceState(null, "", location.pathname);
  $("session").textContent = "no session yet: say where you want to go";
  renderTrip(null, 0);
  renderTranscript(null);
  renderSideLists({});
});

renderTrip(null, 0);
if (sessionId) follow();
