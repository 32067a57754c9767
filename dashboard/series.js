// @ts-check
// The series panel: the chart of events per bucket over the window, its title's
// window and bucket lengths, and the line under it (last full bucket, peak).

import { SeriesChart, settledPoints } from "./chart.js";
import { setText } from "./dom.js";
import * as fmt from "./format.js";

/** @typedef {import("./types.js").Snapshot} Snapshot */

export class SeriesPanel {
  /**
   * @param {{chart: HTMLElement, windowLabel: HTMLElement, bucketLabel: HTMLElement,
   *          meta: HTMLElement}} elements
   */
  constructor({ chart, windowLabel, bucketLabel, meta }) {
    this.chart = new SeriesChart(chart);
    this.windowLabel = windowLabel;
    this.bucketLabel = bucketLabel;
    this.meta = meta;
  }

  /** @param {Snapshot} snapshot */
  update(snapshot) {
    const win = snapshot.window;
    const series = Array.isArray(snapshot.series) ? snapshot.series : [];
    setText(this.windowLabel, fmt.span(win.seconds));
    setText(this.bucketLabel, win.bucket_seconds === 1 ? "second" : `${fmt.span(win.bucket_seconds)} bucket`);
    this.chart.update({
      series,
      start: win.start,
      end: win.end,
      bucketSeconds: win.bucket_seconds || 1,
    });
    const settled = settledPoints(series);
    const latest = settled.length ? settled[settled.length - 1] : null;
    let peak = null;
    for (const point of settled) if (peak === null || point.count > peak.count) peak = point;
    setText(
      this.meta,
      latest && peak
        ? `last full ${win.bucket_seconds === 1 ? "second" : "bucket"} ${fmt.count(latest.count)} · ` +
            `peak ${fmt.count(peak.count)} at ${fmt.clock(peak.start)}`
        : "",
    );
  }
}
