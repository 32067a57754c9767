// @ts-check
// The activity list: what the page noticed (leader changes, drops, reconnects),
// newest first, the last ACTIVITY_ROWS of it.

import { h } from "./dom.js";
import * as fmt from "./format.js";

/** @typedef {import("./types.js").Level} Level */

const ACTIVITY_ROWS = 40;

export class ActivityLog {
  /** @param {HTMLElement} list the <ol> or <ul> the rows go in */
  constructor(list, { rows = ACTIVITY_ROWS } = {}) {
    this.list = list;
    this.rows = rows;
    /** The log's ``note``, bound, to hand to the other modules. */
    this.note = this.add.bind(this);
  }

  /**
   * @param {string} text
   * @param {Level} [level]
   */
  add(text, level = "info") {
    const row = h(
      "li",
      { class: `level-${level}` },
      h("time", {}, fmt.clock(Date.now() / 1000)),
      h("span", {}, text),
    );
    this.list.prepend(row);
    while (this.list.children.length > this.rows) this.list.lastElementChild?.remove();
  }
}
