// @ts-check
// Whether the numbers on screen are current: the connection pill, "as of", the
// banner, the page title, the screen-reader announcement, and body[data-state],
// from the connection's state and the age of the snapshot on screen.
//
// States: live, stale (no snapshot for STALE_AFTER_TICKS ticks), waiting (open,
// no snapshot yet), reconnecting, connecting (never opened yet).

import { SERVICE_RESTART, TRY_AGAIN_LATER } from "./connection.js";
import { setAttr, setText, toggleClass } from "./dom.js";
import * as fmt from "./format.js";
import { STALE_AFTER_TICKS } from "./snapshots.js";

/**
 * @typedef {import("./types.js").Snapshot} Snapshot
 * @typedef {import("./types.js").Note} Note
 * @typedef {import("./connection.js").StatsConnection} StatsConnection
 * @typedef {"live" | "stale" | "waiting" | "reconnecting" | "connecting"} State
 */

const TITLE = "stream-aggregator";
/** @type {Partial<Record<State, string>>} */
const ANNOUNCE = {
  live: "Live: numbers are current.",
  stale: "Stale: no new snapshot; the numbers shown are old.",
  reconnecting: "Disconnected from the server; reconnecting.",
  waiting: "Connected; waiting for the first snapshot.",
};

/**
 * @typedef {object} Moment
 * @property {StatsConnection} connection
 * @property {Snapshot | null} snapshot the snapshot on screen
 * @property {number} receivedAt when it arrived (performance.now())
 * @property {number} tick the expected cadence, in seconds
 * @property {number} now performance.now()
 */

export class ConnectionStatus {
  /**
   * @param {{conn: HTMLElement, connText: HTMLElement, updated: HTMLElement,
   *          banner: HTMLElement, announce: HTMLElement}} elements
   * @param {Note} note
   */
  constructor({ conn, connText, updated, banner, announce }, note) {
    this.conn = conn;
    this.connText = connText;
    this.updated = updated;
    this.banner = banner;
    this.announce = announce;
    this.note = note;
    this.stale = false;
  }

  /**
   * Show the state as of ``moment``; returns whether the snapshot on screen is stale.
   * @param {Moment} moment
   */
  update({ connection, snapshot, receivedAt, tick, now }) {
    const body = document.body;
    const age = snapshot ? (now - receivedAt) / 1000 : null;
    const stale = snapshot !== null && age !== null && age > STALE_AFTER_TICKS * tick;

    /** @type {State} */
    let state;
    if (connection.state === "open") state = snapshot ? (stale ? "stale" : "live") : "waiting";
    else if (connection.state === "waiting" || connection.everOpened) state = "reconnecting";
    else state = "connecting";

    if (stale !== this.stale) {
      if (stale) this.note(`no snapshot for ${fmt.duration(age)}: showing stale numbers`, "bad");
      else this.note("snapshots are flowing again");
      this.stale = stale;
    }
    if (state !== body.dataset.state) setText(this.announce, ANNOUNCE[state] ?? "");
    body.dataset.state = state;
    body.dataset.stale = String(stale);
    toggleClass(body, "is-stale", stale);
    setAttr(this.conn, "data-state", state);

    setText(this.connText, pill(state, connection, age, now));
    setText(
      this.updated,
      snapshot ? `as of ${fmt.clock(snapshot.generated_at)} · ${fmt.duration(age)} ago` : "no data yet",
    );
    const title = state === "live" ? TITLE : `⚠ ${state} · ${TITLE}`;
    if (document.title !== title) document.title = title;
    this.#banner(state, connection, snapshot, stale, age, tick, now);
    return stale;
  }

  /**
   * @param {State} state
   * @param {StatsConnection} connection
   * @param {Snapshot | null} snapshot
   * @param {boolean} stale
   * @param {number | null} age
   * @param {number} tick
   * @param {number} now
   */
  #banner(state, connection, snapshot, stale, age, tick, now) {
    const asOf = snapshot ? ` The numbers below are from ${fmt.clock(snapshot.generated_at)}.` : "";
    let text = "";
    if (state === "reconnecting" || (state === "connecting" && connection.failures > 0)) {
      const close = connection.lastClose;
      const why = close ? describeCloseShort(close.code) : "cannot reach the server";
      const still = connection.lastAttemptOpened || !close ? "" : "; not answering yet";
      const when =
        connection.state === "waiting" && connection.retryAt !== null
          ? `retrying in ${fmt.seconds((connection.retryAt - now) / 1000)}`
          : "connecting…";
      text = `Disconnected (${why}${still}); ${when}, attempt ${connection.failures}.${asOf}`;
    } else if (stale) {
      text =
        `No snapshot for ${fmt.duration(age)} (expected every ${fmt.duration(tick)}). ` +
        `The leader may be failing over.${asOf}`;
    }
    setText(this.banner, text);
    this.banner.hidden = text === "";
    setAttr(this.banner, "data-kind", stale ? "stale" : "info");
  }
}

/**
 * The connection pill's text.
 * @param {State} state
 * @param {StatsConnection} connection
 * @param {number | null} age seconds since the snapshot on screen arrived
 * @param {number} now performance.now()
 */
function pill(state, connection, age, now) {
  switch (state) {
    case "live":
      return "live";
    case "stale":
      return `stale · ${fmt.duration(age)}`;
    case "waiting":
      return "connected · waiting";
    case "reconnecting":
      return connection.state === "waiting" && connection.retryAt !== null
        ? `reconnecting in ${fmt.seconds((connection.retryAt - now) / 1000)}`
        : "reconnecting…";
    default:
      return "connecting…";
  }
}

/** @param {number} code a websocket close code */
function describeCloseShort(code) {
  if (code === SERVICE_RESTART) return "server restarting";
  if (code === TRY_AGAIN_LATER) return "no pod ready";
  if (code === 1006) return "connection lost";
  return `closed with ${code}`;
}
