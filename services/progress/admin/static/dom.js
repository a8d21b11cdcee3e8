// What the admin page's modules (admin.js, admin-batches.js, webhooks.js) build their tables
// with. All text from the server goes in through textContent.

export const $ = (id) => document.getElementById(id);

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

// A row with one cell per name (classed by its name), the `numeric` ones right-aligned; the
// cells are kept on the row as tr._cells.
export function tableRow(names, numeric) {
  const tr = el("tr");
  const cells = {};
  for (const name of names) {
    cells[name] = el("td", name);
    tr.append(cells[name]);
  }
  for (const name of numeric) cells[name].classList.add("num");
  tr._cells = cells;
  return tr;
}

// A job or batch id, shortened, with the whole id on hover.
export function shortId(id) {
  const code = el("code", "job-id", id.slice(0, 8));
  code.title = id;
  return code;
}

// The overall percent: a track with its fill, and the percent as text.
export function overallBar() {
  const overall = el("div", "overall");
  const track = el("div", "track");
  track.append(el("div", "fill"));
  overall.append(track, el("span", "pct"));
  return overall;
}

export function showOverall(overall, percent, status) {
  overall.dataset.status = status;
  overall.querySelector(".fill").style.width = `${percent}%`;
  overall.querySelector(".pct").textContent = `${percent.toFixed(percent % 1 ? 1 : 0)}%`;
}

export function showBadge(badge, status) {
  badge.textContent = status;
  badge.className = `badge status-${status}`;
}

// The status filters' choices, one list for the jobs and the batches tables (a batch is
// never stalled: only the jobs' select carries data-stalled).
const STATUS_CHOICES = [
  ["", "All statuses"],
  ["active", "Active"],
  ["queued", "Queued"],
  ["processing", "Processing"],
  ["completed", "Completed"],
  ["failed", "Failed"],
  ["cancelled", "Cancelled"],
];

export function fillStatusFilter(select) {
  const stalled = "stalled" in select.dataset;
  for (const [value, label] of stalled ? [...STATUS_CHOICES, ["stalled", "Stalled"]] : STATUS_CHOICES) {
    const option = el("option", "", label);
    option.value = value;
    select.append(option);
  }
}
