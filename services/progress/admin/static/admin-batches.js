// The admin page's batch list: every tenant's batches with their aggregate bars, read from
// GET /v1/admin/batches every few seconds (and at once when the key changes). Kept apart from
// admin.js: it only shares the stored key and the page's layout.

import { $, el, fillStatusFilter, overallBar, shortId, showBadge, showOverall, tableRow } from "./dom.js";

const KEY_STORAGE = "docpipe.adminKey";
const REFRESH_MS = 2000;
const LIMIT = 50;
const SEGMENTS = ["completed", "failed", "cancelled", "running"];


function fmtNum(n) {
  return Number(n ?? 0).toLocaleString("en-US");
}

function fmtEta(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 60) return `${seconds}s`;
  const m = Math.floor(seconds / 60);
  return m < 60 ? `${m}m ${seconds % 60}s` : `${Math.floor(m / 60)}h ${m % 60}m`;
}

function buildRow(batch) {
  const names = ["id", "name", "tenant", "status", "progress", "jobs", "pages", "eta", "cost"];
  const tr = tableRow(names, ["jobs", "pages", "eta", "cost"]);
  tr.dataset.batchId = batch.batch_id;
  const cells = tr._cells;
  cells.id.append(shortId(batch.batch_id));
  cells.status.append(el("span", "badge"));
  // The overall percent, then one bar split by how the batch's jobs stand.
  const overall = overallBar();
  const split = el("div", "batch-split");
  split.setAttribute("role", "img");
  for (const part of SEGMENTS) {
    const seg = el("div", `seg seg-${part}`);
    seg.dataset.part = part;
    split.append(seg);
  }
  cells.progress.append(overall, split);
  return tr;
}

function fillRow(tr, b) {
  const c = tr._cells;
  c.name.textContent = b.name ?? "–";
  c.tenant.textContent = b.tenant;
  showBadge(c.status.firstChild, b.status);
  tr.dataset.status = b.status;
  tr.dataset.seq = String(b.seq);
  const percent = Number(b.percent ?? 0);
  const overall = c.progress.querySelector(".overall");
  showOverall(overall, percent, b.status);
  overall.setAttribute("role", "progressbar");
  overall.setAttribute("aria-valuenow", String(percent));
  const total = Math.max(1, b.jobs_total);
  const counts = {
    completed: b.jobs_completed,
    failed: b.jobs_failed,
    cancelled: b.jobs_cancelled,
    running: b.jobs_running,
  };
  const split = c.progress.querySelector(".batch-split");
  for (const seg of split.children) {
    const n = counts[seg.dataset.part];
    seg.style.width = `${(100 * n) / total}%`;
    seg.dataset.count = String(n);
    seg.title = `${n} ${seg.dataset.part}`;
  }
  split.setAttribute(
    "aria-label",
    `${b.jobs_completed} completed, ${b.jobs_failed} failed, ${b.jobs_cancelled} cancelled, ` +
      `${b.jobs_running} running, ${b.jobs_queued} queued of ${b.jobs_total}`,
  );
  const ended = b.jobs_completed + b.jobs_failed + b.jobs_cancelled;
  c.jobs.textContent = `${fmtNum(ended)}/${fmtNum(b.jobs_total)}`;
  c.jobs.title = split.getAttribute("aria-label");
  c.pages.textContent = `${fmtNum(b.pages_done)}/${fmtNum(b.pages_total)}`;
  c.eta.textContent = b.final ? "–" : fmtEta(b.eta_seconds);
  c.cost.textContent = `$${Number(b.cost_usd ?? 0).toFixed(4)}`;
}

const rows = new Map();

async function loadBatches() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (!key) return;
  const status = $("batch-status-filter").value;
  const params = new URLSearchParams({ limit: String(LIMIT) });
  if (status) params.set("status", status);
  const response = await fetch(`/v1/admin/batches?${params}`, {
    headers: { Authorization: `Bearer ${key}`, Accept: "application/json" },
    cache: "no-store",
  });
  if (!response.ok) return; // admin.js tells the user about a refused key
  const { items } = await response.json();
  const body = $("batches-body");
  const keep = new Set();
  for (const batch of items) {
    keep.add(batch.batch_id);
    let tr = rows.get(batch.batch_id);
    if (!tr) {
      tr = buildRow(batch);
      rows.set(batch.batch_id, tr);
    }
    fillRow(tr, batch);
    body.append(tr); // in the listing's order (newest first)
  }
  for (const [id, tr] of rows) {
    if (!keep.has(id)) {
      tr.remove();
      rows.delete(id);
    }
  }
  $("batches-empty").hidden = items.length > 0;
  $("batches-count").textContent = items.length ? `${items.length} shown` : "";
}

function init() {
  fillStatusFilter($("batch-status-filter"));
  const refresh = () => loadBatches().catch(() => {});
  $("batch-status-filter").addEventListener("change", refresh);
  $("key-form").addEventListener("submit", () => setTimeout(refresh, 0));
  setInterval(() => {
    if (!document.hidden) refresh();
  }, REFRESH_MS);
  // admin.js moves ?key= into storage as the page loads; read after it.
  setTimeout(refresh, 0);
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
else init();
