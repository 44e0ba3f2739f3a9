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

// Messages per minute by platform over the window, one point a minute (missing minutes = 0).
function messageSeries(stats, windowS, generatedAt) {
  const minutes = Math.max(1, Math.round(windowS / 60));
  const lastMinute = Math.floor(new Date(generatedAt).getTime() / 60000) * 60;
  const byMinute = new Map((stats.per_minute || []).map((m) => [m.minute, m.messages]));
  const platforms = [...new Set((stats.per_minute || []).flatMap((m) => Object.keys(m.messages)))].sort();
  const starts = Array.from({ length: minutes }, (_, i) => lastMinute - (minutes - 1 - i) * 60);
  if (platforms.length === 0) return [{ label: "no messages yet", points: starts.map(() => 0) }];
  return platforms.map((platform) => ({
    label: platform,
    points: starts.map((minute) => (byMinute.get(minute) || {})[platform] || 0),
  }));
}

function render(data) {
  const stats = data.stats || {};
  setText("workers-online", data.workers.length);
  setText("queue-depth", data.queue_depth === null ? "–" : data.queue_depth);
  setText("messages-total", stats.messages ?? "–");
  setText("ttft", pair(stats.ttft_p50_s, stats.ttft_p95_s));
  setText("total-time", pair(stats.total_p50_s, stats.total_p95_s));
  setText("tokens-per-second", stats.tokens_per_second == null ? "–"
    : Number(stats.tokens_per_second).toFixed(1));
  setText("errors", stats.errors ?? "–");
  const safety = Object.entries(data.safety).sort((a, b) => b[1] - a[1]);
  setText("safety-total", safety.reduce((sum, [, count]) => sum + count, 0));
  setText("updated", new Date(data.generated_at).toLocaleTimeString());
  renderWorkers(data.workers);

  history.push({ ttft: stats.ttft_p50_s ?? null, ttft95: stats.ttft_p95_s ?? null,
                 total: stats.total_p50_s ?? null, total95: stats.total_p95_s ?? null });
  if (history.length > KEEP) history.shift();
  window.charts.drawLines(document.getElementById("chart-messages"),
    messageSeries(stats, data.window_s, data.generated_at),
    document.getElementById("legend-messages"));
  window.charts.drawLines(document.getElementById("chart-latency"), [
    { label: "first token p50", points: history.map((h) => h.ttft) },
    { label: "first token p95", points: history.map((h) => h.ttft95) },
    { label: "reply p50", points: history.map((h) => h.total) },
    { label: "reply p95", points: history.map((h) => h.total95) },
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
