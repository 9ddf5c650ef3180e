// tailpage status page. Plain DOM, no framework, no build step.
//
// Rules kept throughout: alert data (labels, annotations, names) is attacker-controlled text, so
// it only ever reaches the DOM through textContent or element properties, never as HTML. The
// page's CSP (require-trusted-types-for 'script') turns any HTML sink into an error.
//
// Credentials: kept in sessionStorage and sent only as an Authorization header. That leaves the
// API's auth exactly as it is (no cookie auth, so no cross-site request can act with them), and
// they vanish when the tab closes. See README "Status page" for the trade-off against cookies.
"use strict";

const STORAGE_KEY = "tailpage.session";
const SEVERITIES = ["critical", "high", "medium", "low"];
const HISTORY_WINDOW = "24h";

const state = {
  session: null, // {header: "Bearer …" | "Basic …" | null, who: "alice", label: "alice"}
  timer: null,
  clockOffsetMs: 0, // server clock minus ours, from the Date header
  lastJson: "",
  lastRenderAt: 0,
  okAt: null,
  linkedShown: null, // the #ack-… hash already scrolled to
};

const $ = (id) => document.getElementById(id);

function refreshSeconds() {
  const n = Number(new URLSearchParams(location.search).get("refresh"));
  return Number.isFinite(n) && n >= 1 ? Math.min(n, 300) : 10;
}

// -- DOM helpers: text only ------------------------------------------------------------------

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null) continue;
    if (k === "dataset") Object.assign(node.dataset, v);
    else node[k] = v; // properties only (className, title, type, …): never innerHTML
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

function td(...children) {
  return el("td", null, ...children);
}

// Links from alert data: only http(s), so a javascript: URL in an annotation is shown as nothing.
function safeLink(url, text) {
  if (typeof url !== "string" || !url) return null;
  let u;
  try {
    u = new URL(url);
  } catch {
    return null;
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") return null;
  return el("a", { href: u.href, textContent: text, target: "_blank", rel: "noopener noreferrer" });
}

// -- time ------------------------------------------------------------------------------------

function nowMs() {
  return Date.now() + state.clockOffsetMs;
}

function noteServerClock(resp) {
  const d = Date.parse(resp.headers.get("Date") || "");
  if (!Number.isNaN(d)) {
    const off = d - Date.now();
    // Date has 1 s resolution: only correct a real skew, not rounding.
    state.clockOffsetMs = Math.abs(off) > 2000 ? off : 0;
  }
}

function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

function toMs(t) {
  if (typeof t === "number") return t * 1000; // the store's UNIX seconds
  const ms = Date.parse(t); // Alertmanager's RFC 3339
  return Number.isNaN(ms) ? null : ms;
}

function isoUtc(ms) {
  return new Date(ms).toISOString().replace(".000Z", "Z");
}

// "12m 5s ago" with the exact UTC time as a tooltip.
function ago(t) {
  const ms = toMs(t);
  if (ms === null) return el("span", null, "—");
  return el("time", { dateTime: isoUtc(ms), title: isoUtc(ms) }, `${fmtDuration((nowMs() - ms) / 1000)} ago`);
}

// -- API ---------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message, challenge) {
    super(message);
    this.status = status;
    this.challenge = challenge || "";
  }
}

async function api(path, { method = "GET", body, session = state.session } = {}) {
  const headers = { Accept: "application/json" };
  if (session && session.header) headers.Authorization = session.header;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    // credentials "omit": no cookies, and no browser basic-auth prompt on a 401.
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "receiver unreachable");
  }
  noteServerClock(resp);
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const msg = data && typeof data.error === "string" ? data.error : `HTTP ${resp.status}`;
    throw new ApiError(resp.status, msg, resp.headers.get("WWW-Authenticate"));
  }
  return data;
}

// -- session -----------------------------------------------------------------------------------

function loadSession() {
  try {
    const s = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "null");
    if (s && typeof s === "object") return s;
  } catch {
    // a corrupt entry: start over
  }
  return null;
}

function saveSession(s) {
  state.session = s;
  if (s) sessionStorage.setItem(STORAGE_KEY, JSON.stringify(s));
  else sessionStorage.removeItem(STORAGE_KEY);
}

function basicHeader(user, password) {
  const bytes = new TextEncoder().encode(`${user}:${password}`);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return `Basic ${btoa(bin)}`;
}

// The API's rule for `by` (receiver/api.py), checked here so a bad name fails at login, not at 3 a.m.
function validName(name) {
  return /^[\p{L}\p{N}_ .@+-]{1,64}$/u.test(name);
}

function setMode(mode) {
  for (const r of document.querySelectorAll('input[name="mode"]')) r.checked = r.value === mode;
  $("bearer-fields").hidden = mode !== "bearer";
  $("basic-fields").hidden = mode !== "basic";
}

function showLogin(challenge, message) {
  stopTimer();
  $("board").hidden = true;
  $("session").hidden = true;
  $("login").hidden = false;
  if (/^\s*basic/i.test(challenge || "")) setMode("basic");
  $("login-error").textContent = message || "";
  setStatus("Log in to see alerts.");
  (($("basic-fields").hidden ? $("token") : $("username"))).focus();
}

function showBoard() {
  $("login").hidden = true;
  $("board").hidden = false;
  $("session").hidden = false;
  const s = state.session;
  const who = s && s.who ? `acting as ${s.who}` : "";
  $("whoami").textContent = s && s.header ? who : [who, "receiver has no auth configured"].filter(Boolean).join(" · ");
  $("logout").hidden = !(s && s.header); // nothing to log out of without auth
}

async function onLogin(ev) {
  ev.preventDefault();
  const mode = document.querySelector('input[name="mode"]:checked').value;
  const name = $("name").value.trim();
  let session;
  if (mode === "bearer") {
    const token = $("token").value.trim();
    if (!token) return void ($("login-error").textContent = "Enter the token.");
    session = { header: `Bearer ${token}`, who: name, label: name };
  } else {
    const user = $("username").value;
    if (!user) return void ($("login-error").textContent = "Enter the username.");
    session = { header: basicHeader(user, $("password").value), who: name, label: user };
  }
  // The receiver has one shared credential (often Alertmanager's own), so the typed name is the
  // only record of who acknowledged: required in both modes.
  if (!validName(name)) {
    return void ($("login-error").textContent =
      "Enter your name (letters, digits, space . @ + - _): it is recorded when you acknowledge or resolve.");
  }
  $("login-submit").disabled = true;
  $("login-error").textContent = "Checking…";
  try {
    await api("/api/v1/alerts", { session });
  } catch (e) {
    $("login-error").textContent =
      e.status === 401 ? "Wrong token or credentials." : `Cannot log in: ${e.message}`;
    return;
  } finally {
    $("login-submit").disabled = false;
  }
  // Good: keep them for this tab and take the secrets out of the form.
  saveSession(session);
  $("token").value = "";
  $("password").value = "";
  $("login-error").textContent = "";
  showBoard();
  await refresh(true);
}

function logout() {
  saveSession(null);
  $("alerts").tBodies[0].replaceChildren();
  $("history").tBodies[0].replaceChildren();
  $("channels").tBodies[0].replaceChildren();
  $("dead").tBodies[0].replaceChildren();
  $("counts").replaceChildren();
  state.lastJson = "";
  showLogin("", "Logged out.");
}

// -- rendering ---------------------------------------------------------------------------------

function setStatus(text, isError) {
  const s = $("status");
  s.textContent = text;
  s.classList.toggle("error", Boolean(isError));
}

function flash(text, isError) {
  const f = $("flash");
  f.textContent = text;
  f.className = isError ? "error" : "ok";
}

function sevClass(sev) {
  return `sev sev-${SEVERITIES.includes(sev) ? sev : "unknown"}`;
}

function alertName(a) {
  return (a.labels && a.labels.alertname) || "(no alertname)";
}

function component(a) {
  const l = a.labels || {};
  return l.component || l.service || l.job || l.instance || "—";
}

function renderCounts(counts) {
  const keys = [...SEVERITIES, ...Object.keys(counts).filter((k) => !SEVERITIES.includes(k)).sort()];
  $("counts").replaceChildren(
    ...keys.map((k) =>
      el(
        "div",
        { className: `count ${sevClass(k)}${counts[k] ? "" : " zero"}`, dataset: { severity: k } },
        el("span", { className: "n" }, String(counts[k] || 0)),
        el("span", { className: "label" }, k),
      ),
    ),
  );
}

const STATE_TEXT = {
  sent: "sent",
  pending: "pending",
  sending: "sending",
  held: "held (rate limit)",
  digested: "in digest",
  dead: "failed",
};

function deliveryChip(d) {
  let text = STATE_TEXT[d.state] || String(d.state);
  if (d.state === "pending" && d.attempts > 0) text = `retrying (${d.attempts} failed)`;
  const what = d.kind === "escalation" ? ` · step ${d.step}` : d.kind === "firing" ? "" : ` · ${d.kind}`;
  return el(
    "li",
    {
      className: `chip st-${/^[a-z]+$/.test(d.state) ? d.state : "other"}`,
      title: d.error ? `last error: ${d.error}` : "",
      dataset: { channel: d.channel, state: d.state },
    },
    `${d.channel}${what}: ${text}`,
  );
}

function escalationCell(a) {
  const e = a.escalation || {};
  if (!e.steps) return td(el("span", { className: "quiet" }, "none"));
  if (a.acked_at) return td(`stopped at step ${e.step}/${e.steps} (acknowledged)`);
  if (e.next_at === null || e.next_at === undefined) return td(`all ${e.steps} steps fired`);
  const due = e.next_at - nowMs() / 1000;
  const to = (e.next_channels || []).join(", ");
  return td(
    `step ${e.step}/${e.steps}; step ${e.step + 1} `,
    el(
      "time",
      { dateTime: isoUtc(e.next_at * 1000), title: isoUtc(e.next_at * 1000), className: due < 60 ? "soon" : "" },
      due > 0 ? `in ${fmtDuration(due)}` : "due now",
    ),
    to ? ` → ${to}` : "",
  );
}

function actionButton(label, className, handler) {
  const b = el("button", { type: "button", className }, label);
  b.addEventListener("click", () => handler(b));
  return b;
}

// alerts of one Alertmanager group share its notices, escalation and ack (docs/receiver-groups.md)
function groupSizes(alerts) {
  const n = {};
  for (const a of alerts) if (a.group) n[a.group] = (n[a.group] || 0) + 1;
  return n;
}

function alertRow(a, sizes = {}) {
  const ann = a.annotations || {};
  const links = [safeLink(ann.runbook_url, "runbook"), safeLink(a.generator_url, "source")].filter(Boolean);
  const summary = td(el("div", null, ann.summary || ann.description || ""));
  if (links.length) {
    const p = el("div", { className: "links" });
    links.forEach((l, i) => p.append(...(i ? [" · ", l] : [l])));
    summary.append(p);
  }
  const ack = a.acked_at
    ? td(el("span", { className: "acked" }, `${a.acked_by || "?"}, `), ago(a.acked_at))
    : td(actionButton("Acknowledge", "ack", (b) => act(a, "ack", b)));
  const size = a.group ? sizes[a.group] || 0 : 0;
  if (!a.acked_at && size > 1) {
    ack.append(" ", actionButton(`Ack group (${size})`, "ack-group", (b) => act(a, "ack", b, size)));
  }
  const data = a.group ? { fingerprint: a.fingerprint, group: a.group } : { fingerprint: a.fingerprint };
  return el(
    "tr",
    { dataset: data, className: a.acked_at ? "is-acked" : "" },
    td(el("span", { className: sevClass(a.severity) }, a.severity)),
    td(el("strong", null, alertName(a)), el("div", { className: "fp" }, a.fingerprint)),
    td(component(a)),
    summary,
    td(ago(a.starts_at || a.first_notified_at)),
    td(el("ul", { className: "chips" }, ...(a.deliveries || []).map(deliveryChip))),
    escalationCell(a),
    ack,
    td(actionButton("Resolve", "resolve", (b) => act(a, "resolve", b))),
  );
}

function renderAlerts(data) {
  renderCounts(data.counts || {});
  const alerts = data.alerts || [];
  const sizes = groupSizes(alerts);
  $("alerts").tBodies[0].replaceChildren(...alerts.map((a) => alertRow(a, sizes)));
  $("alerts").hidden = alerts.length === 0;
  $("no-alerts").hidden = alerts.length !== 0;
}

// Notifications carry an "Acknowledge" link to `/#ack-<fingerprint>` (receiver/render.py). Opening
// it only points at the alert: a link must never act by itself, the click on the button does.
// A group's messages link to `/#ack-group-<id>`: every alert of the group is marked.
function markLinkedAlert() {
  let fp = null;
  try {
    const m = /^#ack-(.+)$/.exec(location.hash);
    fp = m ? decodeURIComponent(m[1]) : null;
  } catch {
    fp = null; // a malformed escape in the hash
  }
  const group = fp && fp.startsWith("group-") ? fp.slice(6) : null;
  const hit = (r) => (group ? r.dataset.group === group : r.dataset.fingerprint === fp);
  const rows = [...$("alerts").tBodies[0].rows];
  for (const r of rows) r.classList.toggle("linked", !!fp && hit(r));
  if (!fp || state.linkedShown === location.hash) return;
  state.linkedShown = location.hash; // scroll and focus once, not on every refresh
  const row = rows.find(hit);
  if (!row) return flash("The alert in the link is no longer firing.", false);
  row.scrollIntoView({ block: "center" });
  const ack = row.querySelector(group ? "button.ack-group" : "button.ack") || row.querySelector("button.ack");
  if (ack) ack.focus();
}

function renderHistory(hist, dead) {
  const resolved = hist.resolved || [];
  $("history").tBodies[0].replaceChildren(
    ...resolved.map((a) =>
      el(
        "tr",
        { dataset: { fingerprint: a.fingerprint } },
        td(el("span", { className: sevClass(a.severity) }, a.severity)),
        td(el("strong", null, alertName(a))),
        td(component(a)),
        td(ago(a.starts_at || a.first_notified_at)),
        td(a.time_to_ack_s === null ? "not acknowledged" : `${fmtDuration(a.time_to_ack_s)} (${a.acked_by})`),
        td(fmtDuration(a.time_to_resolve_s)),
        td(
          a.resolved_manually
            ? el("span", { title: "resolved by hand on this page or the API" }, a.resolved_by || "?")
            : el("span", { className: "quiet", title: "Alertmanager sent resolved" }, "Alertmanager"),
        ),
      ),
    ),
  );
  $("history").hidden = resolved.length === 0;
  $("no-history").hidden = resolved.length !== 0;

  const channels = hist.channels || [];
  $("channels").tBodies[0].replaceChildren(
    ...channels.map((c) =>
      el(
        "tr",
        { dataset: { channel: c.channel }, className: c.dead || c.failed_attempts ? "has-failures" : "" },
        td(el("strong", null, c.channel)),
        td(String(c.sent || 0)),
        td(String(c.failed_attempts || 0)),
        td(el("span", { className: c.dead ? "bad" : "" }, String(c.dead || 0))),
        td(String(c.pending || 0)),
        td(String(c.digested || 0)),
      ),
    ),
  );
  $("channels").hidden = channels.length === 0;
  $("no-channels").hidden = channels.length !== 0;

  const since = (hist.since || 0) * 1000;
  const rows = (dead || []).filter((d) => (toMs(d.dead_at) || 0) >= since);
  $("dead").tBodies[0].replaceChildren(
    ...rows.map((d) =>
      el(
        "tr",
        { dataset: { channel: d.channel } },
        td(ago(d.dead_at)),
        td(d.channel),
        td(d.alertname || d.fingerprint),
        td(d.kind === "escalation" ? `escalation step ${d.step}` : d.kind),
        td(String(d.attempts)),
        td(el("span", { className: "err" }, d.error || "")),
      ),
    ),
  );
  $("dead").hidden = rows.length === 0;
  $("no-dead").hidden = rows.length !== 0;
}

// -- actions and refresh -----------------------------------------------------------------------

// Who is acting: the name given at login, or (receiver without auth: no login) asked once per tab.
function actor() {
  const s = state.session;
  if (s && s.who) return s.who;
  const name = (prompt("Your name, recorded with the acknowledgement or resolve:") || "").trim();
  if (!name) return null;
  if (!validName(name)) {
    flash("Name: use 1-64 letters, digits, space . @ + - _", true);
    return null;
  }
  saveSession({ header: s ? s.header : null, who: name, label: name });
  showBoard();
  return name;
}

async function act(a, action, button, groupSize = 0) {
  const name = groupSize
    ? `the group of ${groupSize} ${alertName(a)} alerts`
    : `${alertName(a)} (${component(a)})`;
  if (action === "resolve" && !confirm(`Resolve ${name}? This is announced on every channel that was paged.`)) {
    return;
  }
  const who = actor();
  if (!who) return;
  button.disabled = true;
  const body = { by: who };
  try {
    const path = groupSize
      ? `/api/v1/groups/${encodeURIComponent(a.group)}/${action}`
      : `/api/v1/alerts/${encodeURIComponent(a.fingerprint)}/${action}`;
    const r = await api(path, { method: "POST", body });
    flash(`${action === "ack" ? "Acknowledged" : "Resolved"} ${name} as ${r.by}.`);
  } catch (e) {
    if (e.status === 401) return showLogin(e.challenge, "Your session is no longer accepted: log in again.");
    flash(`Could not ${action === "ack" ? "acknowledge" : "resolve"} ${name}: ${e.message}`, true);
    button.disabled = false;
    return;
  }
  await refresh(true);
}

function stopTimer() {
  if (state.timer) clearTimeout(state.timer);
  state.timer = null;
}

async function refresh(force) {
  stopTimer();
  try {
    const [alerts, hist, dead] = await Promise.all([
      api("/api/v1/alerts"),
      api(`/api/v1/history?since=${HISTORY_WINDOW}`),
      api("/api/v1/dead-letters?limit=50"),
    ]);
    const json = JSON.stringify([alerts, hist, dead]);
    // Re-render on new data, and now and then for the relative times; not every tick, so a
    // button is not replaced under the pointer while nothing changed.
    if (force || json !== state.lastJson || Date.now() - state.lastRenderAt > 15000) {
      renderAlerts(alerts);
      renderHistory(hist, dead.dead_letters);
      state.lastJson = json;
      state.lastRenderAt = Date.now();
    }
    state.okAt = Date.now();
    if ($("board").hidden) showBoard();
    markLinkedAlert();
    const n = (alerts.alerts || []).length;
    setStatus(`${n} firing · updated ${new Date().toLocaleTimeString()}`);
    document.title = n ? `(${n}) tailpage · on call` : "tailpage · on call";
  } catch (e) {
    if (e.status === 401) return showLogin(e.challenge, state.session ? "Your session is no longer accepted: log in again." : "");
    // Keep the last data on screen but say plainly that it is stale.
    const since = state.okAt ? ` Data shown is from ${new Date(state.okAt).toLocaleTimeString()}.` : "";
    setStatus(`Cannot refresh: ${e.message}.${since} Retrying…`, true);
  }
  state.timer = setTimeout(() => refresh(false), refreshSeconds() * 1000);
}

async function start() {
  $("login-form").addEventListener("submit", onLogin);
  for (const r of document.querySelectorAll('input[name="mode"]')) r.addEventListener("change", () => setMode(r.value));
  $("logout").addEventListener("click", logout);
  $("refresh").addEventListener("click", () => refresh(true));
  window.addEventListener("hashchange", () => $("board").hidden || markLinkedAlert());
  state.session = loadSession();
  await refresh(true); // a 401 here shows the login form
}

document.addEventListener("DOMContentLoaded", start);
