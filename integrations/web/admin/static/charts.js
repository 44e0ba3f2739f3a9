// Small charts of our own: line charts on <canvas>, bars in inline SVG.
"use strict";

const PALETTE = ["#3559e0", "#1f8a4c", "#d9822b", "#c0362c", "#7a4bd1", "#0f8b8d", "#b7791f"];

function cssVar(name, fallback) {
  const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return value || fallback;
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = Math.pow(10, Math.floor(Math.log10(value)));
  for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * power) return step * power;
  return 10 * power;
}

// series: [{label, points: [number|null, ...]}]; all the same length (oldest first).
function drawLines(canvas, series, legend) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || canvas.width;
  const height = Math.round(width * canvas.height / canvas.width) || canvas.height;
  if (canvas.width !== Math.round(width * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const pad = { left: 44, right: 10, top: 10, bottom: 20 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const values = series.flatMap((s) => s.points.filter((v) => v !== null && v !== undefined));
  const top = niceMax(Math.max(0, ...values));
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = cssVar("--muted", "#5f6b7a");
  ctx.strokeStyle = cssVar("--line", "#dde2e8");
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i += 1) {
    const y = pad.top + plotH - (plotH * i) / 4;
    ctx.beginPath();
    ctx.moveTo(pad.left, y);
    ctx.lineTo(width - pad.right, y);
    ctx.stroke();
    const label = ((top * i) / 4).toLocaleString(undefined, { maximumFractionDigits: 2 });
    ctx.fillText(label, 4, y + 4);
  }
  ctx.fillText("now", width - pad.right - 20, height - 4);
  series.forEach((line, index) => {
    const count = line.points.length;
    if (count === 0) return;
    ctx.strokeStyle = PALETTE[index % PALETTE.length];
    ctx.lineWidth = 2;
    ctx.beginPath();
    let drawing = false;
    line.points.forEach((value, i) => {
      if (value === null || value === undefined) { drawing = false; return; }
      const x = pad.left + (count === 1 ? plotW : (plotW * i) / (count - 1));
      const y = pad.top + plotH - (plotH * value) / top;
      if (drawing) ctx.lineTo(x, y); else ctx.moveTo(x, y);
      drawing = true;
    });
    ctx.stroke();
    // A dot on every sample, so a single one (or one between gaps) still shows.
    ctx.fillStyle = PALETTE[index % PALETTE.length];
    line.points.forEach((value, i) => {
      if (value === null || value === undefined) return;
      const x = pad.left + (count === 1 ? plotW : (plotW * i) / (count - 1));
      const y = pad.top + plotH - (plotH * value) / top;
      ctx.beginPath();
      ctx.arc(x, y, 2.5, 0, 2 * Math.PI);
      ctx.fill();
    });
  });
  if (legend) {
    legend.replaceChildren(...series.map((line, index) => {
      const item = window.admin.el("span");
      const swatch = window.admin.el("span", null, "swatch");
      swatch.style.background = PALETTE[index % PALETTE.length];
      item.append(swatch, document.createTextNode(line.label));
      return item;
    }));
  }
}

// entries: [[label, count], ...] drawn as horizontal bars.
function drawBars(svg, entries) {
  const NS = "http://www.w3.org/2000/svg";
  const width = 560;
  const rowHeight = 26;
  const labelWidth = 150;
  svg.replaceChildren();
  if (entries.length === 0) {
    const text = document.createElementNS(NS, "text");
    text.setAttribute("x", "10");
    text.setAttribute("y", "30");
    text.setAttribute("fill", cssVar("--muted", "#5f6b7a"));
    text.textContent = "No verdicts in this window.";
    svg.append(text);
    svg.setAttribute("viewBox", `0 0 ${width} 60`);
    return;
  }
  const top = Math.max(...entries.map(([, count]) => count));
  entries.forEach(([label, count], index) => {
    const y = index * rowHeight + 4;
    const name = document.createElementNS(NS, "text");
    name.setAttribute("x", "0");
    name.setAttribute("y", String(y + 15));
    name.setAttribute("fill", cssVar("--text", "#1b1f24"));
    name.setAttribute("font-size", "12");
    name.textContent = label;
    const bar = document.createElementNS(NS, "rect");
    const barWidth = Math.max(2, ((width - labelWidth - 50) * count) / top);
    bar.setAttribute("x", String(labelWidth));
    bar.setAttribute("y", String(y + 3));
    bar.setAttribute("width", String(barWidth));
    bar.setAttribute("height", "16");
    bar.setAttribute("rx", "3");
    bar.setAttribute("fill", PALETTE[index % PALETTE.length]);
    const value = document.createElementNS(NS, "text");
    value.setAttribute("x", String(labelWidth + barWidth + 6));
    value.setAttribute("y", String(y + 15));
    value.setAttribute("font-size", "12");
    value.setAttribute("fill", cssVar("--muted", "#5f6b7a"));
    value.textContent = String(count);
    svg.append(name, bar, value);
  });
  svg.setAttribute("viewBox", `0 0 ${width} ${entries.length * rowHeight + 8}`);
}

window.charts = { drawLines, drawBars };
