// @ts-check
// Demo controls: kill, stop or restart a simulated pod.  The panel appears only
// when GET api/demo/pods answers 200 (``aggregator demo``); a production server
// has no such route, and the page then never asks again.

import { h, setAttr, setText, toggleClass } from "./dom.js";

const ACTIONS = [
  { name: "kill", label: "Kill", title: "SIGKILL: no flush, no lease release" },
  { name: "stop", label: "Stop", title: "SIGTERM: flush, commit, release the lease" },
  { name: "restart", label: "Restart", title: "start again with a new identity" },
];
const REFRESH_MS = 2000;
const ACTION_PATIENCE_MS = 10_000;

/**
 * @typedef {import("./types.js").Note} Note
 * @typedef {{name: string, alive: boolean, leader: boolean, identity?: string | null}} DemoPod
 * @typedef {{root: HTMLLIElement, state: HTMLSpanElement,
 *            buttons: Record<string, HTMLButtonElement>}} PodRow
 */

export class DemoControls {
  /**
   * @param {HTMLElement} panel shown only when the server has the demo routes
   * @param {HTMLElement} list one row per pod
   * @param {HTMLElement} message the answer to the last action
   * @param {{onEvent: Note}} handlers
   */
  constructor(panel, list, message, { onEvent }) {
    this.panel = panel;
    this.list = list;
    this.message = message;
    this.onEvent = onEvent;
    /** @type {Map<string, PodRow>} by pod name */
    this.rows = new Map();
    /** @type {boolean | null} null: not asked yet; false: no demo routes */
    this.available = null;
    this.active = false;
    this.busy = false;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._timer = undefined;
  }

  /**
   * Poll while the websocket is open; stop polling while the server is away.
   * @param {boolean} active
   */
  setActive(active) {
    if (active === this.active) return;
    this.active = active;
    clearTimeout(this._timer);
    if (active && this.available !== false) this.refresh();
  }

  async refresh() {
    clearTimeout(this._timer);
    if (!this.active || this.available === false) return;
    try {
      const response = await fetch("api/demo/pods", { cache: "no-store" });
      if (response.status === 404) {
        this.available = false;
        this.panel.hidden = true;
        return;
      }
      if (response.ok) {
        this.available = true;
        this.panel.hidden = false;
        this._render((await response.json()).pods ?? []);
      }
    } catch {
      // The server is away; the websocket reconnect will reactivate polling.
    }
    if (this.active) this._timer = setTimeout(() => this.refresh(), REFRESH_MS);
  }

  /** @param {DemoPod[]} pods */
  _render(pods) {
    pods.forEach((pod, index) => {
      let row = this.rows.get(pod.name);
      if (!row) {
        row = this._row(pod.name);
        this.rows.set(pod.name, row);
      }
      if (this.list.children[index] !== row.root) {
        this.list.insertBefore(row.root, this.list.children[index] ?? null);
      }
      const state = !pod.alive ? "down" : pod.leader ? "leader" : "up";
      setAttr(row.root, "data-state", state);
      setText(row.state, state === "down" ? "down" : state === "leader" ? "leader" : "running");
      toggleClass(row.state, "is-leader", state === "leader");
      toggleClass(row.state, "is-down", state === "down");
      setAttr(row.root, "title", pod.identity ?? "not running");
      row.buttons.kill.disabled = this.busy || !pod.alive;
      row.buttons.stop.disabled = this.busy || !pod.alive;
      row.buttons.restart.disabled = this.busy;
    });
  }

  /**
   * @param {string} name
   * @returns {PodRow}
   */
  _row(name) {
    const state = h("span", { class: "pod-state" });
    /** @type {Record<string, HTMLButtonElement>} */
    const buttons = {};
    const actions = h("span", { class: "pod-actions" });
    for (const action of ACTIONS) {
      const button = h(
        "button",
        { type: "button", title: action.title, "data-action": action.name, "data-testid": `demo-${action.name}-${name}` },
        action.label,
      );
      button.addEventListener("click", () => this._act(name, action.name));
      buttons[action.name] = button;
      actions.append(button);
    }
    const root = h("li", { "data-pod": name }, h("span", { class: "pod-name" }, name), state, actions);
    return { root, state, buttons };
  }

  /**
   * @param {string} name
   * @param {string} action kill, stop or restart
   */
  async _act(name, action) {
    this.busy = true;
    for (const row of this.rows.values()) {
      for (const button of Object.values(row.buttons)) button.disabled = true;
    }
    setText(this.message, `${action} ${name}…`);
    this.onEvent(`demo: ${action} ${name}`, action === "restart" ? "info" : "warn");
    const request = fetch(`api/demo/pods/${encodeURIComponent(name)}/${action}`, {
      method: "POST",
    });
    // The buttons come back after ACTION_PATIENCE_MS even if the answer does not.
    let timer;
    const patience = new Promise((resolve) => {
      timer = setTimeout(() => resolve(null), ACTION_PATIENCE_MS);
    });
    try {
      const response = await Promise.race([request, patience]);
      if (response === null) {
        setText(this.message, `${action} ${name}: no answer after ${ACTION_PATIENCE_MS / 1000} s`);
        request.catch(() => {});
        return;
      }
      const body = await response.json().catch(() => ({}));
      if (response.ok) {
        setText(this.message, "");
        this._render(body.pods ?? []);
      } else {
        setText(this.message, `${action} ${name}: ${body.detail ?? response.statusText}`);
      }
    } catch (error) {
      setText(this.message, `${action} ${name}: ${error}`);
    } finally {
      clearTimeout(timer);
      this.busy = false;
      this.refresh();
    }
  }
}
