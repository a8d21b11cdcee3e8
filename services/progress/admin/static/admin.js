// The docpipe admin page: polls the admin API every few seconds and moves job rows live from
// the fleet-wide WebSocket stream. Every data call carries the admin key; the page itself is
// public. All text from the server goes in through textContent (filenames are user input).

import { $, el, fillStatusFilter, overallBar, shortId, showBadge, showOverall, tableRow } from "./dom.js";

const KEY_STORAGE = "docpipe.adminKey";
const REFRESH_MS = 5000;
const JOB_LIMIT = 200;
const DEAD_LETTER_LIMIT = 50;
const STAGES = ["extract", "ocr", "analyze"];
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const WS_UNAUTHORIZED = 4401;
const WS_FORBIDDEN = 4403;

const state = {
  key: null,
  authProblem: null,
  jobs: new Map(), // job_id -> latest known job (list row or streamed update, whichever is newer)
  rows: new Map(), // job_id -> <tr>
  liveUpdates: new Map(), // job_id -> streamed updates applied (shown as data-live-updates)
  order: [], // job ids shown, newest first
  pending: new Map(), // streamed updates not rendered yet
  flushScheduled: false,
  ws: null,
  wsRetryMs: 1000,
  wsTimer: null,
  refreshTimer: null,
  searchTimer: null,
  totalsTimer: null,
  prefix: "", // the bus prefix, stripped from queue names for display
};


// --- key handling ---------------------------------------------------------------------------

function takeKeyFromUrl() {
  // ?key= is a convenience for links; keep it out of the address bar and history afterwards.
  const params = new URLSearchParams(location.search);
  const key = params.get("key");
  if (key) {
    sessionStorage.setItem(KEY_STORAGE, key);
    params.delete("key");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? `?${rest}` : "") + location.hash);
  }
}

function setKey(key) {
  state.key = key || null;
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
  state.authProblem = null;
  showBanner(null);
  $("key-input").value = "";
  $("key-input").placeholder = key ? "Admin key (set)" : "Admin key";
  document.body.dataset.auth = key ? "pending" : "none";
  resetJobs();
  connectStream();
  refreshAll();
}

function authFailed(status) {
  state.authProblem = status;
  document.body.dataset.auth = "denied";
  closeStream();
  showBanner(
    status === 403
      ? "This key is not an admin key (403). Enter an admin key above."
      : "The key was not accepted (401). Enter an admin key above.",
    "error",
  );
  $("key-input").focus();
}

// --- HTTP -----------------------------------------------------------------------------------

class HttpError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { Authorization: `Bearer ${state.key}`, Accept: "application/json" },
    cache: "no-store",
  });
  if (response.status === 401 || response.status === 403) {
    authFailed(response.status);
    throw new HttpError(response.status);
  }
  if (!response.ok) {
    let detail = "";
    try {
      detail = (await response.json()).detail;
    } catch {
      /* not JSON */
    }
    // A 422's detail is a list of validation errors, each with its sentence in "msg".
    const sentence = Array.isArray(detail)
      ? detail.map((error) => (error && error.msg) || "").join(" ")
      : detail;
    throw new HttpError(response.status, typeof sentence === "string" ? sentence : "");
  }
  return response.status === 204 ? null : response.json();
}

// --- formatting -----------------------------------------------------------------------------

function fmtAge(iso) {
  if (!iso) return "–";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${Math.floor(seconds)}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ${Math.floor((seconds % 3600) / 60)}m`;
  return `${Math.floor(seconds / 86400)}d`;
}

function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toLocaleString(undefined, {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

function fmtNum(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString();
}

function fmtUsd(n) {
  if (n === null || n === undefined) return "–";
  const value = Number(n);
  // Local and cheap models cost fractions of a cent per job: keep them visible.
  return `$${value.toFixed(value !== 0 && Math.abs(value) < 0.01 ? 6 : 4)}`;
}

function stageFraction(count, job) {
  // A stage with no work is full once the job completed (nothing was left), empty before.
  if (!count || count.total <= 0) return job.status === "completed" ? 1 : 0;
  return Math.min(1, Math.max(0, count.done / count.total));
}

// --- jobs table -----------------------------------------------------------------------------

function resetJobs() {
  state.jobs.clear();
  state.rows.clear();
  state.liveUpdates.clear();
  state.order = [];
  state.pending.clear();
  $("jobs-body").replaceChildren();
}

function filterValues() {
  return { status: $("status-filter").value, q: $("search").value.trim() };
}

function matchesFilter(job) {
  const { status, q } = filterValues();
  if (status === "active" && TERMINAL.has(job.status)) return false;
  if (status === "stalled" && (!job.stalled || TERMINAL.has(job.status))) return false;
  if (status && status !== "active" && status !== "stalled" && job.status !== status) return false;
  if (q) {
    const term = q.toLowerCase();
    const hit =
      job.job_id.startsWith(term) ||
      (job.filename || "").toLowerCase().includes(term) ||
      (job.tenant || "").toLowerCase().includes(term);
    if (!hit) return false;
  }
  return true;
}

function buildRow(jobId) {
  const names = ["id", "tenant", "filename", "status", "stage", "progress", "pages", "cost", "stalled", "error", "age"];
  const tr = tableRow(names, ["pages", "cost", "age"]);
  tr.dataset.jobId = jobId;
  const cells = tr._cells;
  cells.id.append(shortId(jobId));
  cells.status.append(el("span", "badge"));

  // Overall percent, then one bar per stage (extract / ocr / analyze).
  const overall = overallBar();
  const stages = el("div", "stages");
  for (const stage of STAGES) {
    const box = el("div", "stage-bar");
    box.dataset.stage = stage;
    box.setAttribute("role", "progressbar");
    box.setAttribute("aria-label", stage);
    box.setAttribute("aria-valuemin", "0");
    box.setAttribute("aria-valuemax", "100");
    const strack = el("div", "track");
    strack.append(el("div", "fill"));
    box.append(el("span", "stage-label", stage), strack, el("span", "stage-count"));
    stages.append(box);
  }
  cells.progress.append(overall, stages);
  return tr;
}

function fillRow(tr, job) {
  const c = tr._cells;
  c.tenant.textContent = job.tenant ?? "–";
  c.filename.textContent = job.filename ?? "–";
  c.filename.title = job.filename ?? "";
  showBadge(c.status.firstChild, job.status);
  tr.dataset.status = job.status;
  c.stage.textContent = job.stage ?? "";

  const percent = Number(job.percent ?? 0);
  showOverall(c.progress.querySelector(".overall"), percent, job.status);
  for (const box of c.progress.querySelectorAll(".stage-bar")) {
    const count = (job.stages || {})[box.dataset.stage];
    const fraction = stageFraction(count, job);
    const pct = Math.round(fraction * 100);
    box.setAttribute("aria-valuenow", String(pct));
    box.dataset.total = String(count ? count.total : 0);
    box.classList.toggle("no-work", !count || count.total <= 0);
    box.classList.toggle("has-failed", !!count && count.failed > 0);
    box.querySelector(".fill").style.width = `${pct}%`;
    box.querySelector(".stage-count").textContent =
      count && count.total > 0 ? `${count.done}/${count.total}` : "–";
    box.title = count
      ? `${box.dataset.stage}: ${count.done} of ${count.total} done` +
        (count.failed ? `, ${count.failed} failed` : "")
      : `${box.dataset.stage}: nothing yet`;
  }

  c.pages.textContent =
    job.pages_total === null || job.pages_total === undefined
      ? "–"
      : `${job.pages_done ?? 0}/${job.pages_total}`;
  // AI spend: the ledger's figure in the list, the live one in streamed snapshots.
  const spent = Number(job.tokens ?? 0) > 0 || Number(job.cost_usd ?? 0) > 0;
  c.cost.textContent = spent ? fmtUsd(job.cost_usd) : "–";
  c.cost.title = spent ? `${fmtNum(job.tokens ?? 0)} tokens` : "no AI analysis";
  c.cost.dataset.costUsd = String(job.cost_usd ?? 0);
  c.stalled.textContent = "";
  if (job.stalled) c.stalled.append(el("span", "flag", "stalled"));
  c.error.textContent = job.error ?? "";
  c.error.title = job.error ?? "";
  c.age.textContent = fmtAge(job.created_at);
  c.age.title = job.created_at ? fmtTime(job.created_at) : "";
  tr.dataset.liveUpdates = String(state.liveUpdates.get(job.job_id) || 0);
}

function rowFor(jobId) {
  let tr = state.rows.get(jobId);
  if (!tr) {
    tr = buildRow(jobId);
    state.rows.set(jobId, tr);
  }
  return tr;
}

function renderOrder() {
  const body = $("jobs-body");
  const wanted = state.order.map((id) => rowFor(id));
  // Re-insert only when the order changed, so rows are not rebuilt on every refresh.
  const current = Array.from(body.children);
  const same = current.length === wanted.length && current.every((node, i) => node === wanted[i]);
  if (!same) body.replaceChildren(...wanted);
  for (const [id, tr] of state.rows) {
    if (!tr.isConnected) state.rows.delete(id);
  }
  $("jobs-empty").hidden = state.order.length > 0;
  $("jobs-count").textContent =
    state.order.length >= JOB_LIMIT ? `newest ${JOB_LIMIT}` : `${state.order.length} shown`;
}

function newer(current, incoming) {
  // Keep whichever of the listed row and the streamed update is later (seq rises per job).
  if (!current) return incoming;
  if ((incoming.seq ?? 0) >= (current.seq ?? 0)) return { ...current, ...incoming };
  return { ...incoming, ...current };
}

async function loadJobs() {
  const { status, q } = filterValues();
  const params = new URLSearchParams({ limit: String(JOB_LIMIT) });
  if (status) params.set("status", status);
  if (q) params.set("q", q);
  const body = await api(`/v1/admin/jobs?${params}`);
  if (status !== filterValues().status || q !== filterValues().q) return; // filter moved on
  const listed = new Set();
  for (const item of body.items) {
    state.jobs.set(item.job_id, newer(state.jobs.get(item.job_id), item));
    listed.add(item.job_id);
  }
  // Jobs streamed in after the query ran are newer than anything listed: keep them on top.
  const newest = body.items.length ? body.items[0].created_at : null;
  const extra = state.order.filter(
    (id) => !listed.has(id) && newest && state.jobs.get(id)?.created_at > newest &&
      matchesFilter(state.jobs.get(id)),
  );
  state.order = [...extra, ...body.items.map((i) => i.job_id)].slice(0, JOB_LIMIT);
  for (const id of state.order) fillRow(rowFor(id), state.jobs.get(id));
  renderOrder();
  for (const id of Array.from(state.jobs.keys())) {
    if (!state.rows.has(id)) state.jobs.delete(id);
  }
}

function applyStreamed(update) {
  const id = update.job_id;
  const current = state.jobs.get(id);
  if (current && (current.seq ?? 0) > (update.seq ?? 0)) return;
  const job = newer(current, update);
  state.jobs.set(id, job);
  // A new job or a status change moves the totals: re-read them soon, not at the next poll.
  if (!current || current.status !== job.status || current.stalled !== job.stalled) scheduleTotals();
  if (state.rows.has(id)) {
    fillRow(state.rows.get(id), job);
  } else if (job.created_at && matchesFilter(job)) {
    state.order.unshift(id);
    state.order.sort((a, b) => (state.jobs.get(b)?.created_at ?? "").localeCompare(state.jobs.get(a)?.created_at ?? ""));
    state.order = state.order.slice(0, JOB_LIMIT);
    fillRow(rowFor(id), job);
    renderOrder();
  }
}

function scheduleFlush() {
  if (state.flushScheduled) return;
  state.flushScheduled = true;
  // Batch bursts of updates into one paint; a timer also runs in background tabs.
  setTimeout(() => {
    state.flushScheduled = false;
    const batch = Array.from(state.pending.values());
    state.pending.clear();
    for (const update of batch) applyStreamed(update);
  }, 100);
}

// --- live stream ----------------------------------------------------------------------------

function setLive(stateName, text) {
  $("live").dataset.state = stateName;
  $("live-text").textContent = text;
}

function closeStream() {
  clearTimeout(state.wsTimer);
  state.wsAttempt = (state.wsAttempt || 0) + 1; // a ticket on its way opens nothing now
  if (state.ws) {
    state.ws.onclose = null;
    state.ws.close();
    state.ws = null;
  }
  setLive("off", "offline");
}

function retryStream() {
  setLive("retry", "reconnecting");
  state.wsTimer = setTimeout(connectStream, state.wsRetryMs);
  state.wsRetryMs = Math.min(state.wsRetryMs * 2, 15000);
}

// The key never goes in the WebSocket's URL: the page trades it (in a header) for a
// short-lived ticket first, and opens the stream with that.
async function connectStream() {
  closeStream();
  if (!state.key) return;
  const attempt = (state.wsAttempt = (state.wsAttempt || 0) + 1);
  setLive("connecting", "connecting");
  let ticket;
  try {
    ticket = (await api("/v1/admin/ws-ticket", { method: "POST" })).ticket;
  } catch (error) {
    if (attempt === state.wsAttempt && !(error.status === 401 || error.status === 403)) {
      retryStream();
    }
    return;
  }
  if (attempt !== state.wsAttempt || !state.key) return; // superseded meanwhile
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(
    `${proto}//${location.host}/v1/admin/events?ticket=${encodeURIComponent(ticket)}`,
  );
  state.ws = ws;
  const reconnect = state.wsRetryMs > 1000;
  ws.onopen = () => {
    state.wsRetryMs = 1000;
    setLive("on", "live");
    if (reconnect) refreshAll(); // catch up on anything missed while disconnected
  };
  ws.onmessage = (event) => {
    let update;
    try {
      update = JSON.parse(event.data);
    } catch {
      return;
    }
    if (!update || !update.job_id) return;
    // Counted on arrival: several updates of one job may be painted as one.
    state.liveUpdates.set(update.job_id, (state.liveUpdates.get(update.job_id) || 0) + 1);
    const queued = state.pending.get(update.job_id);
    if (!queued || (update.seq ?? 0) >= (queued.seq ?? 0)) state.pending.set(update.job_id, update);
    scheduleFlush();
  };
  ws.onclose = (event) => {
    state.ws = null;
    if (event.code === WS_UNAUTHORIZED || event.code === WS_FORBIDDEN) {
      authFailed(event.code === WS_FORBIDDEN ? 403 : 401);
      return;
    }
    retryStream();
  };
}

// --- totals ---------------------------------------------------------------------------------

function scheduleTotals() {
  if (state.totalsTimer) return;
  state.totalsTimer = setTimeout(() => {
    state.totalsTimer = null;
    if (!state.authProblem) loadTotals().catch(() => {});
  }, 1000);
}

async function loadTotals() {
  const t = await api("/v1/admin/totals");
  $("total-all").textContent = fmtNum(t.total);
  for (const status of ["queued", "processing", "completed", "failed", "cancelled"]) {
    $(`total-${status}`).textContent = fmtNum(t.by_status[status] ?? 0);
  }
  $("total-stalled").textContent = fmtNum(t.stalled);
  const w = t.last_window;
  $("window-label").textContent = `(last ${t.window_minutes} min)`;
  $("throughput").textContent = Number(w.completed_per_minute).toFixed(1);
  $("throughput-note").textContent =
    `${fmtNum(w.completed)} completed · ${fmtNum(w.failed)} failed · ` +
    `${fmtNum(w.submitted)} submitted · ${fmtNum(w.pages)} pages`;
}

// --- AI usage -------------------------------------------------------------------------------

function usageSince(days) {
  // From midnight UTC (days - 1) days ago: the usage lines are UTC days.
  const start = new Date();
  start.setUTCHours(0, 0, 0, 0);
  start.setUTCDate(start.getUTCDate() - (days - 1));
  return start.toISOString();
}

function usageRow(cells, data) {
  const tr = el("tr");
  for (const [key, value] of Object.entries(data)) tr.dataset[key] = value;
  for (const [className, text] of cells) tr.append(el("td", className, text));
  return tr;
}

async function loadUsage() {
  const days = Number($("usage-days").value || 7);
  const body = await api(`/v1/usage?since=${encodeURIComponent(usageSince(days))}`);
  if (days !== Number($("usage-days").value || 7)) return; // the period moved on
  const rows = body.lines.map((line) =>
    usageRow(
      [
        ["tenant", line.tenant],
        ["day", line.day],
        ["model", line.model],
        ["num calls", fmtNum(line.calls)],
        ["num tokens-in", fmtNum(line.input_tokens)],
        ["num tokens-out", fmtNum(line.output_tokens)],
        ["num cost", fmtUsd(line.cost_usd)],
      ],
      { tenant: line.tenant, day: line.day, model: line.model },
    ),
  );
  const tenants = Object.entries(body.by_tenant).map(([tenant, t]) =>
    usageRow(
      [
        ["tenant", tenant],
        ["day", "all days"],
        ["model", "all models"],
        ["num calls", fmtNum(t.calls)],
        ["num tokens-in", fmtNum(t.input_tokens)],
        ["num tokens-out", fmtNum(t.output_tokens)],
        ["num cost", fmtUsd(t.cost_usd)],
      ],
      { tenant, total: "tenant" },
    ),
  );
  $("usage-body").replaceChildren(...rows);
  $("usage-tenants").replaceChildren(...(tenants.length > 1 ? tenants : []));
  $("usage-empty").hidden = rows.length > 0;
  $("usage-table").hidden = rows.length === 0;
  $("usage-total").textContent =
    `${fmtUsd(body.cost_usd)} · ${fmtNum(body.tokens)} tokens · ${fmtNum(body.calls)} calls`;
}

// --- queues ---------------------------------------------------------------------------------

function queueParts(name, prefix) {
  const rest = prefix && name.startsWith(`${prefix}.`) ? name.slice(prefix.length + 1) : name;
  const retry = rest.match(/^(.*)\.retry\.(\d+)$/);
  if (retry) return { group: retry[1], kind: "retry", short: rest };
  if (rest.endsWith(".dlq")) return { group: rest.slice(0, -4), kind: "dead", short: rest };
  return { group: rest, kind: "work", short: rest };
}

function numCell(value, className) {
  const td = el("td", `num ${className || ""}`.trim(), value === null || value === undefined ? "–" : fmtNum(value));
  if (value === null || value === undefined) td.title = "queue not declared";
  return td;
}

async function loadQueues() {
  let body;
  try {
    body = await api("/v1/admin/queues");
  } catch (err) {
    if (err.status === 401 || err.status === 403) throw err;
    $("queues-body").replaceChildren();
    $("queues-empty").hidden = false;
    $("queues-empty").textContent = `Queue depths unavailable: ${err.message}`;
    $("queues-source").textContent = "";
    return;
  }
  state.prefix = body.prefix || "";
  const groups = new Map();
  const all = [];
  for (const q of body.queues) {
    const parts = queueParts(q.queue, body.prefix);
    const g = groups.get(parts.group) || { work: null, consumers: null, retry: 0, dead: null, names: [] };
    if (parts.kind === "work") {
      g.work = q.messages;
      g.consumers = q.consumers;
    } else if (parts.kind === "retry") {
      g.retry += q.messages ?? 0;
    } else {
      g.dead = q.messages;
    }
    g.names.push(q.queue);
    groups.set(parts.group, g);
    const tr = el("tr");
    tr.dataset.queue = q.queue;
    const name = el("td", "queue-name", parts.short);
    name.title = q.queue;
    tr.append(name, numCell(q.messages), numCell(q.consumers));
    all.push(tr);
  }
  const rows = [];
  for (const [group, g] of groups) {
    const tr = el("tr");
    tr.dataset.group = group;
    const name = el("td", "queue-name", group);
    name.title = g.names.join("\n");
    tr.append(
      name,
      numCell(g.work, "messages"),
      numCell(g.consumers, g.consumers === 0 ? "consumers warn" : "consumers"),
      numCell(g.retry, g.retry ? "retrying warn" : "retrying"),
      numCell(g.dead, g.dead ? "dead bad" : "dead"),
    );
    rows.push(tr);
  }
  $("queues-body").replaceChildren(...rows);
  $("queues-all-body").replaceChildren(...all);
  $("queues-empty").hidden = rows.length > 0;
  $("queues-empty").textContent = "Queue depths have not been read yet.";
  const age = body.age_seconds;
  // The broker is read every few seconds; an old reading means the reader cannot reach it.
  $("queues-source").textContent =
    age === null || age === undefined ? "" : age > 30 ? `stale: read ${Math.round(age)}s ago` : `prefix ${body.prefix}`;
  $("queues-source").classList.toggle("stale", age > 30);
}

// --- dead letters ---------------------------------------------------------------------------

function toast(text, kind = "info") {
  const node = $("toast");
  node.textContent = text;
  node.dataset.kind = kind;
  node.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (node.hidden = true), 4000);
}

async function deadLetterAction(item, action) {
  const id = encodeURIComponent(item.id);
  if (action === "purge" && !confirm(`Purge dead letter ${item.id}? It cannot be replayed after.`)) {
    return;
  }
  try {
    if (action === "replay") await api(`/v1/dead-letters/${id}/replay`, { method: "POST" });
    else await api(`/v1/dead-letters/${id}`, { method: "DELETE" });
    toast(action === "replay" ? "Replayed." : "Purged.", "ok");
  } catch (err) {
    toast(`${action} failed: ${err.message}`, "error");
  }
  await loadDeadLetters().catch(() => {});
}

function queueCell(name) {
  const td = el("td", "queue-name", name ? queueParts(name, state.prefix).short : "–");
  td.title = name ?? "";
  return td;
}

async function loadDeadLetters() {
  const body$ = $("dead-letters-body");
  const empty = $("dead-letters-empty");
  const note = $("dead-letters-note");
  let body;
  try {
    body = await api(`/v1/dead-letters?limit=${DEAD_LETTER_LIMIT}`);
  } catch (err) {
    if (err.status === 401 || err.status === 403) throw err;
    body$.replaceChildren();
    $("dead-letters-table").hidden = true;
    empty.hidden = false;
    empty.textContent =
      err.status === 404 ? "The dead-letter API is not available on this service." : `Dead letters unavailable: ${err.message}`;
    $("dead-letters-count").textContent = "";
    note.textContent = "";
    return;
  }
  const items = body.items || [];
  const rows = items.map((item) => {
    const tr = el("tr");
    tr.dataset.deadLetterId = String(item.id);
    const job = el("td");
    if (item.job_id) {
      const code = el("code", "job-id", String(item.job_id).slice(0, 8));
      code.title = String(item.job_id);
      job.append(code);
    } else {
      job.textContent = "–";
    }
    const reason = el("td", "reason", item.reason ?? "–");
    if (item.replay_count) {
      const replayed = el("span", "flag replayed", `replayed ×${item.replay_count}`);
      replayed.title = item.replayed_at ? `last replayed ${fmtTime(item.replayed_at)}` : "";
      reason.append(" ", replayed);
    }
    const error = el("td", "error", item.error ?? "");
    error.title = item.error ?? "";
    const actions = el("td", "actions-col");
    const replay = el("button", "small", "Replay");
    replay.type = "button";
    replay.addEventListener("click", () => deadLetterAction(item, "replay"));
    const purge = el("button", "small danger", "Purge");
    purge.type = "button";
    purge.addEventListener("click", () => deadLetterAction(item, "purge"));
    actions.append(replay, purge);
    tr.append(
      el("td", "when", fmtTime(item.created_at)),
      queueCell(item.queue),
      el("td", "event", item.routing_key ?? "–"),
      job,
      reason,
      error,
      el("td", "num", item.attempts ?? "–"),
      actions,
    );
    return tr;
  });
  body$.replaceChildren(...rows);
  $("dead-letters-table").hidden = rows.length === 0;
  empty.hidden = rows.length > 0;
  empty.textContent = "No dead letters.";
  $("dead-letters-count").textContent = items.length ? String(items.length) + (body.next_cursor ? "+" : "") : "";
  note.textContent = body.next_cursor ? `showing the newest ${items.length}` : "";
}

// --- refresh loop ---------------------------------------------------------------------------

function showBanner(text, kind = "info") {
  const node = $("banner");
  node.hidden = !text;
  node.textContent = text || "";
  node.dataset.kind = kind;
}

async function refreshAll() {
  if (!state.key) {
    showBanner("Enter an admin key above to see every job, queue and dead letter.");
    return;
  }
  if (state.authProblem) return;
  // Dead letters after queues: their queue names are shown without the bus prefix.
  const queuesThenDeadLetters = (async () => {
    try {
      await loadQueues();
    } finally {
      await loadDeadLetters();
    }
  })();
  const results = await Promise.allSettled([
    loadJobs(),
    loadTotals(),
    queuesThenDeadLetters,
    loadUsage(),
  ]);
  if (state.authProblem) return;
  document.body.dataset.auth = "ok";
  const failed = results.filter((r) => r.status === "rejected");
  if (failed.length) showBanner(`Some data could not be loaded: ${failed[0].reason.message}`, "warn");
  else showBanner(null);
  $("refreshed").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

function scheduleRefresh() {
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(async () => {
    if (!document.hidden) await refreshAll().catch(() => {});
    scheduleRefresh();
  }, REFRESH_MS);
}

function tickAges() {
  for (const [id, tr] of state.rows) {
    const job = state.jobs.get(id);
    if (job) tr._cells.age.textContent = fmtAge(job.created_at);
  }
}

function init() {
  fillStatusFilter($("status-filter"));
  takeKeyFromUrl();
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("key-input").value.trim();
    if (value) setKey(value);
  });
  $("key-forget").addEventListener("click", () => setKey(null));
  $("status-filter").addEventListener("change", () => {
    resetJobs();
    loadJobs().catch(() => {});
  });
  $("search").addEventListener("input", () => {
    clearTimeout(state.searchTimer);
    state.searchTimer = setTimeout(() => {
      resetJobs();
      loadJobs().catch(() => {});
    }, 250);
  });
  $("usage-days").addEventListener("change", () => loadUsage().catch(() => {}));
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refreshAll().catch(() => {});
  });
  setInterval(tickAges, 1000);
  setKey(sessionStorage.getItem(KEY_STORAGE));
  scheduleRefresh();
}

init();
