"use strict";

/*
 * A small time-series chart on a <canvas>: a filled line over a value axis
 * from zero, time labels, and a text readout of the point nearest the
 * pointer (or of the latest point). Redrawn at the canvas's own size, for
 * the screen's pixel ratio, whenever that size changes.
 *
 * NOMP.chart(canvas, readout, format) -> {set(points), add(point)}, where a
 * point is [unix seconds, value] and format(value) is the axis's text.
 */
NOMP.chart = (canvas, readout, format) => {
  const MAX_POINTS = 20000;
  const GRID_LINES = 4;
  const PADDING = { top: 10, right: 10, bottom: 22, gap: 8 };
  let points = [];
  let hovered = null; // index into points
  let layout = null; // where the last drawing put the plot, for the pointer

  function themeColor(name, fallback) {
    const value = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
    return value || fallback;
  }

  /** The smallest 1, 2, 2.5 or 5 times a power of ten at or above value. */
  function niceCeiling(value) {
    if (!(value > 0)) return 1;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) {
      if (step * power >= value) return step * power;
    }
    return 10 * power;
  }

  function timeLabel(unixSeconds, span) {
    const d = new Date(unixSeconds * 1000);
    const clock = `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
    return span > 36 * 3600 ? `${d.getMonth() + 1}/${d.getDate()} ${clock}` : clock;
  }

  function describe(point) {
    return `${NOMP.formatDate(point[0])}: ${format(point[1])}`;
  }

  function updateReadout() {
    if (!readout) return;
    if (points.length === 0) readout.textContent = "No data yet.";
    else if (hovered !== null) readout.textContent = describe(points[hovered]);
    else readout.textContent = `Latest ${describe(points[points.length - 1])}`;
  }

  function draw() {
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (!width || !height) return;
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const context = canvas.getContext("2d");
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    context.clearRect(0, 0, width, height);

    const line = themeColor("--accent", "#1f6feb");
    const fill = themeColor("--accent-fill", "rgba(31, 111, 235, 0.16)");
    const grid = themeColor("--border", "#dde2e9");
    const text = themeColor("--muted", "#5d6878");
    context.font = "11px system-ui, sans-serif";

    canvas.dataset.points = String(points.length);
    if (points.length === 0) {
      layout = null;
      context.fillStyle = text;
      context.textAlign = "center";
      context.textBaseline = "middle";
      context.fillText("No data yet", width / 2, height / 2);
      return;
    }

    let highest = 0;
    for (const point of points) highest = Math.max(highest, point[1]);
    const top = niceCeiling(highest);
    const labels = [];
    for (let i = 0; i <= GRID_LINES; i += 1) labels.push(format((top * i) / GRID_LINES));
    let labelWidth = 0;
    for (const label of labels) labelWidth = Math.max(labelWidth, context.measureText(label).width);
    const left = Math.ceil(labelWidth) + PADDING.gap;
    const right = width - PADDING.right;
    const upper = PADDING.top;
    const lower = height - PADDING.bottom;

    context.lineWidth = 1;
    context.strokeStyle = grid;
    context.fillStyle = text;
    context.textAlign = "right";
    context.textBaseline = "middle";
    labels.forEach((label, i) => {
      const y = Math.round(lower - ((lower - upper) * i) / GRID_LINES) + 0.5;
      context.beginPath();
      context.moveTo(left, y);
      context.lineTo(right, y);
      context.stroke();
      context.fillText(label, left - 4, y);
    });

    const first = points[0][0];
    const last = points[points.length - 1][0];
    const span = last - first;
    const xOf = (t) => (span > 0 ? left + ((right - left) * (t - first)) / span : right);
    const yOf = (v) => lower - ((lower - upper) * v) / top;
    layout = { xOf };

    context.textBaseline = "top";
    if (span > 0) {
      context.textAlign = "left";
      context.fillText(timeLabel(first, span), left, lower + 6);
      context.textAlign = "center";
      context.fillText(timeLabel(first + span / 2, span), (left + right) / 2, lower + 6);
      context.textAlign = "right";
      context.fillText(timeLabel(last, span), right, lower + 6);
    } else {
      context.textAlign = "right";
      context.fillText(timeLabel(last, span), right, lower + 6);
    }

    context.beginPath();
    context.moveTo(xOf(first), lower);
    for (const [t, v] of points) context.lineTo(xOf(t), yOf(v));
    context.lineTo(xOf(last), lower);
    context.closePath();
    context.fillStyle = fill;
    context.fill();

    context.beginPath();
    points.forEach(([t, v], i) => (i === 0 ? context.moveTo(xOf(t), yOf(v)) : context.lineTo(xOf(t), yOf(v))));
    context.strokeStyle = line;
    context.lineWidth = 2;
    context.lineJoin = "round";
    context.stroke();

    const marked = hovered !== null ? hovered : points.length === 1 ? 0 : null;
    if (marked !== null) {
      const [t, v] = points[marked];
      if (hovered !== null) {
        context.beginPath();
        context.moveTo(Math.round(xOf(t)) + 0.5, upper);
        context.lineTo(Math.round(xOf(t)) + 0.5, lower);
        context.strokeStyle = text;
        context.lineWidth = 1;
        context.stroke();
      }
      context.beginPath();
      context.arc(xOf(t), yOf(v), 3.5, 0, 2 * Math.PI);
      context.fillStyle = line;
      context.fill();
    }
  }

  let pending = false;
  function redraw() {
    if (pending) return;
    pending = true;
    window.requestAnimationFrame(() => {
      pending = false;
      draw();
      updateReadout();
    });
  }

  /** The index of the point nearest to x (in CSS pixels from the canvas's left). */
  function nearest(x) {
    let low = 0;
    let high = points.length - 1;
    while (low < high) {
      const middle = (low + high) >> 1;
      if (layout.xOf(points[middle][0]) < x) low = middle + 1;
      else high = middle;
    }
    if (low > 0 && Math.abs(layout.xOf(points[low - 1][0]) - x) <= Math.abs(layout.xOf(points[low][0]) - x)) {
      return low - 1;
    }
    return low;
  }

  canvas.addEventListener("pointermove", (event) => {
    if (!layout || points.length === 0) return;
    const box = canvas.getBoundingClientRect();
    hovered = nearest(event.clientX - box.left);
    redraw();
  });
  canvas.addEventListener("pointerleave", () => {
    hovered = null;
    redraw();
  });
  if ("ResizeObserver" in window) new ResizeObserver(redraw).observe(canvas);
  else window.addEventListener("resize", redraw);

  return {
    /** Replace every point (oldest first). */
    set(newPoints) {
      points = newPoints.filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1])).slice(-MAX_POINTS);
      hovered = null;
      redraw();
    },
    /** Append a newer point; one not newer than the last is ignored. */
    add(point) {
      if (!Number.isFinite(point[0]) || !Number.isFinite(point[1])) return;
      if (points.length > 0 && point[0] <= points[points.length - 1][0]) return;
      points.push(point);
      if (points.length > MAX_POINTS) {
        points.shift();
        hovered = null; // its index moved
      }
      redraw();
    },
  };
};
