// @ts-check
// The per-bucket event counts over the window, as a hand-written SVG area chart.
//
// The SVG and all its elements are created once; every tick only rewrites
// attributes and text, so updates never flicker.  The chart redraws itself when
// its box is resized, and shows the bucket under the pointer.

import * as fmt from "./format.js";

const SVG = "http://www.w3.org/2000/svg";
const MARGIN = { top: 12, right: 14, bottom: 24, left: 52 };
const X_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400];

/**
 * @typedef {{start: number, count: number}} Point
 * @typedef {{series: Point[], start: number, end: number, bucketSeconds: number}} ChartData
 * @typedef {{left: number, top: number, width: number, height: number}} Plot
 * @typedef {{x: (t: number) => number, y: (v: number) => number, start: number, span: number,
 *            bucketSeconds: number}} Scale
 * @typedef {{group: SVGGElement, line: SVGElement, label: SVGElement}} GridLine
 * @typedef {{group: SVGGElement, tick: SVGElement, label: SVGElement}} XLabel
 * @typedef {Record<string, string | number>} Attributes
 */

/**
 * @template {keyof SVGElementTagNameMap} K
 * @param {K} name
 * @param {Attributes} [attributes]
 * @param {Element | null} [parent]
 * @returns {SVGElementTagNameMap[K]}
 */
function svg(name, attributes = {}, parent = null) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  if (parent) parent.appendChild(node);
  return node;
}

/**
 * @param {Element} node
 * @param {Attributes} attributes
 */
function setAll(node, attributes) {
  for (const [key, value] of Object.entries(attributes)) {
    const text = String(value);
    if (node.getAttribute(key) !== text) node.setAttribute(key, text);
  }
}

/**
 * @param {Node} node
 * @param {string} text
 */
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

/**
 * The buckets that are complete: all but the newest, which is still filling
 * (events arrive a little after their time, and pods flush every half second).
 * @template {{start: number, count: number}} P
 * @param {P[]} series
 * @returns {P[]}
 */
export function settledPoints(series) {
  return series.length > 1 ? series.slice(0, -1) : series;
}

/**
 * A "nice" step (1, 2 or 5 times a power of ten) close to ``raw``, at least ``least``.
 * @param {number} raw
 * @param {number} [least]
 */
export function niceStep(raw, least = 1) {
  if (!(raw > 0)) return least;
  const power = 10 ** Math.floor(Math.log10(raw));
  const fraction = raw / power;
  const nice = fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10;
  return Math.max(least, nice * power);
}

export class SeriesChart {
  /** @param {HTMLElement} container the chart fills it, and follows its size */
  constructor(container) {
    this.container = container;
    /** @type {ChartData | null} */
    this.data = null;
    /** @type {number | null} the pointer's x in the chart, while it is over it */
    this.hoverX = null;
    /** @type {Plot | null} the plotting area of the last render */
    this.plot = null;
    /** @type {Scale | null} */
    this.scale = null;

    this.root = svg("svg", { class: "series", role: "img", "aria-label": "Events per bucket" });
    this.gridGroup = svg("g", { class: "grid" }, this.root);
    this.xGroup = svg("g", { class: "x-axis" }, this.root);
    this.area = svg("path", { class: "area" }, this.root);
    this.line = svg("path", { class: "line" }, this.root);
    this.open = svg("path", { class: "line filling" }, this.root);
    this.baseline = svg("line", { class: "baseline" }, this.root);
    this.cursor = svg("g", { class: "cursor", visibility: "hidden" }, this.root);
    this.cursorLine = svg("line", {}, this.cursor);
    this.cursorDot = svg("circle", { r: 3.5 }, this.cursor);
    this.empty = svg("text", { class: "empty", "text-anchor": "middle" }, this.root);
    this.empty.textContent = "waiting for the first snapshot…";
    /** @type {GridLine[]} */
    this.gridLines = [];
    /** @type {XLabel[]} */
    this.xLabels = [];

    this.tooltip = document.createElement("div");
    this.tooltip.className = "chart-tip";
    this.tooltip.hidden = true;
    container.append(this.root, this.tooltip);

    this.root.addEventListener("pointermove", (event) => {
      this.hoverX = event.clientX - this.root.getBoundingClientRect().left;
      this._drawCursor();
    });
    this.root.addEventListener("pointerleave", () => {
      this.hoverX = null;
      this._drawCursor();
    });
    new ResizeObserver(() => this.render()).observe(container);
  }

  /** @param {ChartData} data */
  update(data) {
    this.data = data;
    this.render();
  }

  render() {
    const width = this.container.clientWidth;
    const height = this.container.clientHeight;
    if (width <= 0 || height <= 0) return;
    setAll(this.root, { width, height, viewBox: `0 0 ${width} ${height}` });
    const plot = {
      left: MARGIN.left,
      top: MARGIN.top,
      width: Math.max(10, width - MARGIN.left - MARGIN.right),
      height: Math.max(10, height - MARGIN.top - MARGIN.bottom),
    };
    this.plot = plot;
    const data = this.data;
    setAll(this.empty, {
      x: plot.left + plot.width / 2,
      y: plot.top + plot.height / 2,
      visibility: data ? "hidden" : "visible",
    });
    if (!data) return;

    const { series, start, end, bucketSeconds } = data;
    const span = Math.max(bucketSeconds, end - start);
    let peak = 0;
    for (const point of series) peak = Math.max(peak, point.count);
    const yTicks = Math.max(2, Math.min(5, Math.floor(plot.height / 36)));
    const yStep = niceStep(peak / yTicks, 1);
    const yMax = Math.max(yStep, Math.ceil((peak * 1.05) / yStep) * yStep);
    /** @param {number} t */
    const x = (t) => plot.left + ((t - start) / span) * plot.width;
    /** @param {number} v */
    const y = (v) => plot.top + plot.height - (v / yMax) * plot.height;
    this.scale = { x, y, start, span, bucketSeconds };

    this._drawGrid(plot, yStep, yMax, y);
    this._drawXAxis(plot, start, end, x);

    // The newest bucket is still filling (events arrive a little after their
    // time, and pods flush every half second): draw it dashed, not as a dip.
    const settled = series.length > 1 ? series.length - 1 : series.length;
    /** @param {Point} point */
    const px = (point) => x(point.start + bucketSeconds / 2).toFixed(1);
    /** @param {Point} point */
    const py = (point) => y(point.count).toFixed(1);
    let line = "";
    for (let i = 0; i < settled; i++) line += `${i === 0 ? "M" : "L"}${px(series[i])},${py(series[i])}`;
    let area = "";
    let open = "";
    if (settled > 0) {
      const floor = y(0).toFixed(1);
      area = `${line}L${px(series[settled - 1])},${floor}L${px(series[0])},${floor}Z`;
    }
    if (settled < series.length) {
      const a = series[settled - 1];
      const b = series[settled];
      open = `M${px(a)},${py(a)}L${px(b)},${py(b)}`;
    }
    setAll(this.line, { d: line || "M0,0" });
    setAll(this.area, { d: area || "M0,0" });
    setAll(this.open, { d: open || "M0,0", visibility: open ? "visible" : "hidden" });
    setAll(this.baseline, { x1: plot.left, x2: plot.left + plot.width, y1: y(0), y2: y(0) });
    const latest = settled > 0 ? series[settled - 1].count : 0;
    this.root.setAttribute(
      "aria-label",
      `Events per ${fmt.span(bucketSeconds)} bucket: latest ${fmt.count(latest)}, peak ${fmt.count(peak)}`,
    );
    this._drawCursor();
  }

  /**
   * @param {Plot} plot
   * @param {number} step
   * @param {number} max
   * @param {(v: number) => number} y
   */
  _drawGrid(plot, step, max, y) {
    /** @type {number[]} */
    const values = [];
    for (let v = 0; v <= max + step / 2; v += step) values.push(v);
    while (this.gridLines.length < values.length) {
      const group = svg("g", {}, this.gridGroup);
      this.gridLines.push({ group, line: svg("line", {}, group), label: svg("text", { "text-anchor": "end" }, group) });
    }
    this.gridLines.forEach((item, i) => {
      if (i >= values.length) {
        setAll(item.group, { visibility: "hidden" });
        return;
      }
      const py = y(values[i]).toFixed(1);
      setAll(item.group, { visibility: "visible" });
      setAll(item.line, { x1: plot.left, x2: plot.left + plot.width, y1: py, y2: py });
      setAll(item.label, { x: plot.left - 8, y: py, dy: "0.32em" });
      setText(item.label, fmt.count(values[i]));
    });
  }

  /**
   * @param {Plot} plot
   * @param {number} start
   * @param {number} end
   * @param {(t: number) => number} x
   */
  _drawXAxis(plot, start, end, x) {
    const most = Math.max(2, Math.floor(plot.width / 84));
    const step = X_STEPS.find((s) => (end - start) / s <= most) ?? X_STEPS[X_STEPS.length - 1];
    /** @type {number[]} */
    const ticks = [];
    for (let t = Math.ceil(start / step) * step; t <= end; t += step) ticks.push(t);
    while (this.xLabels.length < ticks.length) {
      const group = svg("g", {}, this.xGroup);
      this.xLabels.push({ group, tick: svg("line", {}, group), label: svg("text", { "text-anchor": "middle" }, group) });
    }
    const bottom = plot.top + plot.height;
    this.xLabels.forEach((item, i) => {
      if (i >= ticks.length) {
        setAll(item.group, { visibility: "hidden" });
        return;
      }
      const px = x(ticks[i]).toFixed(1);
      setAll(item.group, { visibility: "visible" });
      setAll(item.tick, { x1: px, x2: px, y1: bottom, y2: bottom + 4 });
      setAll(item.label, { x: px, y: bottom + 16 });
      setText(item.label, step < 60 ? fmt.clock(ticks[i]) : fmt.shortClock(ticks[i]));
    });
  }

  _drawCursor() {
    const data = this.data;
    const scale = this.scale;
    const plot = this.plot;
    if (this.hoverX === null || !data || !scale || !plot || data.series.length === 0) {
      setAll(this.cursor, { visibility: "hidden" });
      this.tooltip.hidden = true;
      return;
    }
    const t = scale.start + ((this.hoverX - plot.left) / plot.width) * scale.span;
    const index = Math.min(
      data.series.length - 1,
      Math.max(0, Math.floor((t - data.series[0].start) / scale.bucketSeconds)),
    );
    const point = data.series[index];
    const px = scale.x(point.start + scale.bucketSeconds / 2);
    const py = scale.y(point.count);
    setAll(this.cursor, { visibility: "visible" });
    setAll(this.cursorLine, { x1: px, x2: px, y1: plot.top, y2: plot.top + plot.height });
    setAll(this.cursorDot, { cx: px, cy: py });
    const until = point.start + scale.bucketSeconds;
    const filling = index === data.series.length - 1 && data.series.length > 1 ? " (still filling)" : "";
    setText(
      this.tooltip,
      `${fmt.clock(point.start)}–${fmt.clock(until)} · ${fmt.count(point.count)} events${filling}`,
    );
    this.tooltip.hidden = false;
    const box = this.container.clientWidth;
    const tipWidth = this.tooltip.offsetWidth;
    const left = px + 12 + tipWidth > box ? px - 12 - tipWidth : px + 12;
    this.tooltip.style.transform = `translate(${Math.round(left)}px, ${Math.round(plot.top)}px)`;
  }
}
