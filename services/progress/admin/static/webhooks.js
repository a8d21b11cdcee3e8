// The admin page's webhook panel: a job's deliveries and every attempt, with a button to
// redeliver one. Self-contained (its own module): it reads the admin key the page keeps in
// sessionStorage. All text from the server goes in through textContent.

import { $, el } from "./dom.js";

const KEY_STORAGE = "docpipe.adminKey";

async function call(path, method = "GET") {
  const key = sessionStorage.getItem(KEY_STORAGE) || "";
  const response = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${key}`, Accept: "application/json" },
    cache: "no-store",
  });
  let body = null;
  try {
    body = await response.json();
  } catch {
    /* not JSON */
  }
  if (!response.ok) {
    const detail = body && typeof body.detail === "string" ? body.detail : `HTTP ${response.status}`;
    throw new Error(detail);
  }
  return body;
}

function attemptsText(history) {
  return history
    .map((a) => `#${a.attempt} ${a.status_code ?? "no answer"} ${Math.round(a.latency_ms)} ms` +
      (a.error ? ` – ${a.error}` : ""))
    .join("\n");
}

function deliveryRow(item, jobId) {
  const tr = el("tr");
  tr.dataset.deliveryId = item.delivery_id;
  tr.append(
    el("td", "event", item.event_type),
    el("td", "url", item.url),
    el("td", "status", item.status),
    el("td", "num attempts", item.history.length),
    el("td", "history", attemptsText(item.history)),
  );
  const actions = el("td", "actions-col");
  const redo = el("button", "ghost redeliver", "Redeliver");
  redo.type = "button";
  redo.addEventListener("click", async () => {
    redo.disabled = true;
    try {
      await call(`/v1/admin/webhooks/${encodeURIComponent(item.delivery_id)}/redeliver`, "POST");
      $("webhooks-note").textContent = "Redelivery queued.";
    } catch (error) {
      $("webhooks-note").textContent = `Redelivery refused: ${error.message}`;
    }
    await showWebhooks(jobId);
  });
  actions.append(redo);
  tr.append(actions);
  return tr;
}

async function showWebhooks(jobId) {
  const body = $("webhooks-body");
  const empty = $("webhooks-empty");
  try {
    const data = await call(`/v1/jobs/${encodeURIComponent(jobId)}/webhooks`);
    body.replaceChildren(...data.items.map((item) => deliveryRow(item, jobId)));
    empty.textContent = "No webhook deliveries for this job.";
    empty.hidden = data.items.length > 0;
  } catch (error) {
    body.replaceChildren();
    empty.textContent = error.message;
    empty.hidden = false;
  }
}

function init() {
  $("webhooks-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const jobId = $("webhooks-job").value.trim();
    $("webhooks-note").textContent = "";
    if (jobId) showWebhooks(jobId);
  });
}

init();
