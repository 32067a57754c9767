// @ts-check
// Top keys per dimension: one panel per key of ``snapshot.by``, in the order the
// server sends them.  Rows are reused by position, so a new ranking rewrites
// text and bar widths in place.

import { h, setAttr, setText } from "./dom.js";
import * as fmt from "./format.js";

/** @typedef {import("./types.js").KeyRow} KeyRow */

export class TopPanels {
  /** @param {HTMLElement} container */
  constructor(container) {
    this.container = container;
    /** @type {Map<string, TopPanel>} by dimension */
    this.panels = new Map();
  }

  /**
   * @param {Record<string, KeyRow[]>} by the top keys of each dimension
   * @param {number} total the events in the window
   */
  update(by, total) {
    const names = Object.keys(by ?? {});
    for (const [name, panel] of this.panels) {
      if (!names.includes(name)) {
        panel.root.remove();
        this.panels.delete(name);
      }
    }
    names.forEach((name, index) => {
      let panel = this.panels.get(name);
      if (!panel) {
        panel = new TopPanel(name);
        this.panels.set(name, panel);
      }
      if (this.container.children[index] !== panel.root) {
        this.container.insertBefore(panel.root, this.container.children[index] ?? null);
      }
      panel.update(Array.isArray(by[name]) ? by[name] : [], total);
    });
  }
}

class TopPanel {
  /** @param {string} name the dimension */
  constructor(name) {
    this.name = name;
    /** @type {TopRow[]} */
    this.rows = [];
    this.title = h("h2", {}, `Top ${label(name)}`);
    this.meta = h("p", { class: "panel-meta" });
    this.list = h("ol", { class: "top-list" });
    this.rest = h("p", { class: "top-rest" });
    this.empty = h("p", { class: "top-empty", hidden: true }, "no events in the window");
    this.root = h(
      "section",
      { class: "panel top-panel", "data-dimension": name, "data-testid": `top-${name}` },
      h("header", { class: "panel-head" }, this.title, this.meta),
      h("div", { class: "top-columns", "aria-hidden": "true" },
        h("span", {}, label(name)), h("span", { class: "r" }, "events"),
        h("span", { class: "r" }, "share"), h("span", { class: "r p99" }, "p99 ms")),
      this.list,
      this.empty,
      this.rest,
    );
  }

  /**
   * @param {KeyRow[]} rows
   * @param {number} total
   */
  update(rows, total) {
    const largest = rows.reduce((most, row) => Math.max(most, row.count), 0);
    while (this.rows.length < rows.length) this.rows.push(new TopRow(this.list));
    let shown = 0;
    this.rows.forEach((row, i) => {
      if (i < rows.length) {
        row.update(rows[i], total, largest);
        shown += rows[i].count;
      } else {
        row.hide();
      }
    });
    this.empty.hidden = rows.length > 0;
    setText(this.meta, rows.length ? `top ${rows.length} by events` : "");
    const rest = total - shown;
    setText(
      this.rest,
      rows.length && rest > 0 ? `all other keys: ${fmt.count(rest)} (${fmt.percent(rest / total)})` : "",
    );
  }
}

class TopRow {
  /** @param {HTMLElement} list */
  constructor(list) {
    this.bar = h("span", { class: "bar" });
    this.key = h("span", { class: "key" });
    this.count = h("span", { class: "count r" });
    this.share = h("span", { class: "share r" });
    this.p99 = h("span", { class: "p99 r" });
    this.root = h("li", { class: "top-row" }, this.bar, this.key, this.count, this.share, this.p99);
    list.append(this.root);
  }

  /**
   * @param {KeyRow} row
   * @param {number} total
   * @param {number} largest the count of the first row, whose bar is full
   */
  update(row, total, largest) {
    this.root.hidden = false;
    const share = total > 0 ? row.count / total : 0;
    setText(this.key, row.key);
    setText(this.count, fmt.count(row.count));
    setText(this.share, fmt.percent(share));
    setText(this.p99, typeof row.p99 === "number" ? fmt.millis(row.p99) : fmt.MISSING);
    const width = largest > 0 ? (100 * row.count) / largest : 0;
    this.bar.style.width = `${width.toFixed(2)}%`;
    const details = [
      `${row.key}: ${fmt.count(row.count)} events (${fmt.percent(share)} of all)`,
      typeof row.distinct === "number" ? `${fmt.count(row.distinct)} distinct devices` : null,
      typeof row.p99 === "number" ? `p99 ${fmt.millis(row.p99)} ms` : null,
    ];
    setAttr(this.root, "title", details.filter(Boolean).join(" · "));
    setAttr(this.root, "data-key", row.key);
  }

  hide() {
    this.root.hidden = true;
  }
}

/** @param {string} name */
function label(name) {
  return name.replaceAll("_", " ");
}
