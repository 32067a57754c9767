// @ts-check
// The totals over the window, one card each (index.html's `.kpi[data-kpi]`): the
// number, its exact value in data-value for tests and tools, and a note under it.

import { settledPoints } from "./chart.js";
import { setAttr, setText, toggleClass } from "./dom.js";
import * as fmt from "./format.js";

/** @typedef {import("./types.js").Snapshot} Snapshot */

/** A card whose rejected share of the input is above this is marked. */
const ATTENTION_SHARE = 0.05;

/**
 * @typedef {object} Card
 * @property {HTMLElement} card
 * @property {HTMLElement} num
 * @property {HTMLElement} note
 */

export class KpiCards {
  /** @param {ParentNode} root where the `.kpi` cards are */
  constructor(root) {
    /** @type {Record<string, Card>} */
    this.cards = {};
    for (const card of root.querySelectorAll(".kpi")) {
      if (!(card instanceof HTMLElement) || card.dataset.kpi === undefined) continue;
      const num = card.querySelector(".num");
      const note = card.querySelector(".note");
      if (!(num instanceof HTMLElement) || !(note instanceof HTMLElement)) {
        throw new Error(`dashboard markup: the ${card.dataset.kpi} card has no .num or .note`);
      }
      this.cards[card.dataset.kpi] = { card, num, note };
    }
  }

  /** @param {Snapshot} snapshot */
  update(snapshot) {
    const total = snapshot.total;
    const value = total.value ?? null;
    const win = snapshot.window;

    this.#number("count", total.count, fmt.count(total.count));
    this.#note("count", `${fmt.clock(win.start)} – ${fmt.clock(win.end)}`);
    this.#number("rate", total.rate_per_s, fmt.rate(total.rate_per_s));
    setAttr(this.#card("rate").card, "title", `events in the window / ${win.seconds} s; "now" is the last full bucket`);
    const settled = settledPoints(Array.isArray(snapshot.series) ? snapshot.series : []);
    const latest = settled.length ? settled[settled.length - 1] : null;
    this.#note(
      "rate",
      latest ? `now ${fmt.count(Math.round(latest.count / (win.bucket_seconds || 1)))}/s` : "\u00a0",
    );
    this.#number("distinct", total.distinct, fmt.count(total.distinct));
    this.#number("p50", value?.p50, fmt.millis(value?.p50));
    this.#number("p90", value?.p90, fmt.millis(value?.p90));
    this.#number("p99", value?.p99, fmt.millis(value?.p99));
    this.#note("p50", value ? `mean ${fmt.millis(value.mean)} ms` : "no values");
    this.#note("p90", value ? `min ${fmt.millis(value.min)} ms` : "\u00a0");
    this.#note("p99", value ? `max ${fmt.millis(value.max)} ms` : "\u00a0");

    const rejected = snapshot.rejected ?? { count: 0, by_reason: {} };
    this.#number("rejected", rejected.count, fmt.count(rejected.count));
    const reasons = Object.entries(rejected.by_reason ?? {})
      .filter(([, n]) => n > 0)
      .sort((a, b) => b[1] - a[1]);
    const input = (total.count ?? 0) + (rejected.count ?? 0);
    this.#note("rejected", reasons.length ? `${fmt.percent(rejected.count / input)} of input` : "no bad input");
    const card = this.#card("rejected").card;
    setAttr(
      card,
      "title",
      reasons.length ? reasons.map(([r, n]) => `${r.replaceAll("_", " ")}: ${fmt.count(n)}`).join("\n") : "no bad input",
    );
    toggleClass(card, "attention", rejected.count > 0 && rejected.count / input > ATTENTION_SHARE);
    this.#number("late", snapshot.late, fmt.count(snapshot.late));
    this.#note("late", `future: ${fmt.count(snapshot.future)}`);
  }

  /** @param {string} name */
  #card(name) {
    const card = this.cards[name];
    if (card === undefined) throw new Error(`dashboard markup has no ${name} card`);
    return card;
  }

  /**
   * @param {string} name
   * @param {unknown} raw the exact value, kept in data-value when it is a number
   * @param {string} text
   */
  #number(name, raw, text) {
    const { num } = this.#card(name);
    setText(num, text);
    setAttr(num, "data-value", typeof raw === "number" ? raw : null);
  }

  /**
   * @param {string} name
   * @param {string} text
   */
  #note(name, text) {
    setText(this.#card(name).note, text);
  }
}
