// The dashboard: polls /admin/api/dashboard and redraws the tiles and charts.
"use strict";

const POLL_MS = 3000;
const KEEP = 60; // samples kept for the charts (3 minutes at one per 3 s)
const history = [];

function seconds(value) {
  return value === null || value === undefined ? "–" : `${Number(value).toFixed(2)} s`;
}

function pair(p50, p95) {
  return p50 === null || p50 === undefined ? "–" : `${seconds(p50)} / ${seconds(p95)}`;
}

function setText(id, text) {
  document.getElementById(id).textContent = text;
}

function renderWorkers(workers) {
  const rows = workers.map((worker) => {
    const row = document.createElement("tr");
    const running = worker.active.length ? worker.active.map((t) => t.name).join(", ") : "idle";
    for (const text of [worker.hostname, worker.pool_size, running, worker.model]) {
      row.append(window.admin.el("td", text));
    }
    return row;
  });
  if (rows.length === 0) {
    const row = document.createElement("tr");
    const cell = window.admin.el("td", "No worker answers right now.", "empty");
    cell.colSpan = 4;
    row.append(cell);
    rows.push(row);
  }
  document.getElementById("worker-rows").replaceChildren(...rows);
}

function render(data) {
  const stats = data.stats || {};
  setText("workers-online", data.workers.length);
  setText("queue-depth", data.queue_depth === null ? "–" : data.queue_depth);
  setText("messages-total", stats.messages_total ?? "–");
  setText("ttft", pair(stats.ttft_p50, stats.ttft_p95));
  setText("total-time", pair(stats.total_p50, stats.total_p95));
  setText("tokens-per-second", stats.tokens_per_second == null ? "–"
    : Number(stats.tokens_per_second).toFixed(1));
  setText("errors", stats.errors ?? "–");
  const safety = Object.entries(data.safety).sort((a, b) => b[1] - a[1]);
  setText("safety-total", safety.reduce((sum, [, count]) => sum + count, 0));
  setText("updated", new Date(data.generated_at).toLocaleTimeString());
  renderWorkers(data.workers);

  history.push({ perMinute: stats.messages_per_minute || {}, ttft: stats.ttft_p50 ?? null,
                 ttft95: stats.ttft_p95 ?? null, total: stats.total_p50 ?? null });
  if (history.length > KEEP) history.shift();
  const platforms = [...new Set(history.flatMap((h) => Object.keys(h.perMinute)))].sort();
  const messageSeries = platforms.map((platform) => ({
    label: platform, points: history.map((h) => h.perMinute[platform] ?? 0) }));
  window.charts.drawLines(document.getElementById("chart-messages"),
    messageSeries.length ? messageSeries : [{ label: "no messages yet", points: history.map(() => 0) }],
    document.getElementById("legend-messages"));
  window.charts.drawLines(document.getElementById("chart-latency"), [
    { label: "first token p50", points: history.map((h) => h.ttft) },
    { label: "first token p95", points: history.map((h) => h.ttft95) },
    { label: "reply p50", points: history.map((h) => h.total) },
  ], document.getElementById("legend-latency"));
  window.charts.drawBars(document.getElementById("chart-safety"), safety);
  document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
}

async function poll() {
  try {
    render(await window.admin.getJson("/admin/api/dashboard"));
  } catch (error) {
    setText("updated", "not answering");
  } finally {
    window.setTimeout(poll, POLL_MS);
  }
}

document.addEventListener("DOMContentLoaded", poll);
