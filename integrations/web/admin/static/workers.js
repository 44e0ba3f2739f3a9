// The workers page: refreshes each worker's pool size and running tasks every few seconds;
// reloads the page when a worker appears or goes away (its row has the resize forms).
"use strict";

const REFRESH_MS = 5000;

function rowsByHost() {
  const rows = new Map();
  for (const row of document.querySelectorAll('[data-testid="worker"]')) {
    rows.set(row.dataset.hostname, row);
  }
  return rows;
}

async function refresh() {
  try {
    const { workers } = await window.admin.getJson("/admin/api/workers");
    const rows = rowsByHost();
    const hosts = workers.map((w) => w.hostname).sort();
    if (hosts.join("\n") !== [...rows.keys()].sort().join("\n")) {
      window.location.reload();
      return;
    }
    for (const worker of workers) {
      const row = rows.get(worker.hostname);
      row.querySelector('[data-testid="pool-size"]').textContent = String(worker.pool_size);
      row.querySelector('[data-testid="running"]').textContent = worker.active.length
        ? worker.active.map((task) => task.name).join(", ") : "idle";
      row.querySelector('[data-testid="tasks-done"]').textContent = String(worker.tasks_done);
      const shrink = row.querySelector('[data-testid="pool-shrink"]');
      if (shrink) shrink.disabled = worker.pool_size <= 1;
    }
  } catch (error) {
    // A worker or the broker not answering for a moment: try again at the next tick.
  } finally {
    window.setTimeout(refresh, REFRESH_MS);
  }
}

document.addEventListener("DOMContentLoaded", () => window.setTimeout(refresh, REFRESH_MS));
