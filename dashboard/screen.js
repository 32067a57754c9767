// @ts-check
// What is on screen, and why: every message from the websocket passes the epoch
// gate (snapshots.js) before anything is drawn, so the header always names the
// leader of the snapshot on screen; between snapshots, ``refresh`` keeps ages,
// the stale state and the reconnect countdown current.

import { setText } from "./dom.js";
import * as fmt from "./format.js";

/**
 * @typedef {import("./types.js").Snapshot} Snapshot
 * @typedef {import("./types.js").Note} Note
 * @typedef {import("./connection.js").StatsConnection} StatsConnection
 * @typedef {import("./snapshots.js").SnapshotGate} SnapshotGate
 * @typedef {import("./snapshots.js").TickEstimator} TickEstimator
 * @typedef {import("./leader.js").LeaderFacts} LeaderFacts
 * @typedef {import("./kpis.js").KpiCards} KpiCards
 * @typedef {import("./series.js").SeriesPanel} SeriesPanel
 * @typedef {import("./topn.js").TopPanels} TopPanels
 * @typedef {import("./members.js").MembersTable} MembersTable
 * @typedef {import("./status.js").ConnectionStatus} ConnectionStatus
 * @typedef {import("./demo.js").DemoControls} DemoControls
 */

/**
 * The parts of the page a snapshot, or the passing of time, updates.
 * @typedef {object} Views
 * @property {LeaderFacts} leader
 * @property {KpiCards} kpis
 * @property {SeriesPanel} series
 * @property {TopPanels} tops
 * @property {MembersTable} members
 * @property {ConnectionStatus} status
 * @property {DemoControls} demo
 * @property {HTMLElement} foot
 */

export class Screen {
  /**
   * @param {{gate: SnapshotGate, ticks: TickEstimator, connection: StatsConnection,
   *          views: Views, note: Note}} parts
   */
  constructor({ gate, ticks, connection, views, note }) {
    this.gate = gate;
    this.ticks = ticks;
    this.connection = connection;
    this.views = views;
    this.note = note;
    /**
     * The snapshot on screen and when it arrived (performance.now()); the
     * browser tests read both through ``globalThis.dashboard.shown``.
     * @type {{snapshot: Snapshot | null, receivedAt: number, dropReason: string | null}}
     */
    this.shown = { snapshot: null, receivedAt: 0, dropReason: null };
  }

  /**
   * A message from the websocket that delivered it (``connectionId``).
   * @param {string} data
   * @param {number} connectionId
   */
  receive(data, connectionId) {
    const now = performance.now();
    const shown = this.shown;
    /** @type {Snapshot} */
    let snapshot;
    try {
      snapshot = JSON.parse(data);
    } catch {
      this.note("ignored a message that is not JSON", "warn");
      return;
    }
    const decision = this.gate.offer(snapshot, connectionId, now, this.ticks.seconds);
    if (!decision.accept) {
      if (decision.kind !== "duplicate" && decision.reason !== shown.dropReason) {
        this.note(`ignoring snapshots: ${decision.reason}`, "warn");
        shown.dropReason = decision.reason;
      }
      return;
    }
    shown.dropReason = null;
    if (decision.reason === "epoch-reset") {
      this.note(
        `epochs started again at ${snapshot.epoch} (the lease was recreated); following the new leader`,
        "warn",
      );
    }
    this.ticks.observe(snapshot);
    const previous = shown.snapshot;
    shown.snapshot = snapshot;
    shown.receivedAt = now;
    this.views.leader.track(snapshot, previous, now);
    this.render(snapshot, now);
    this.refresh();
  }

  /**
   * @param {Snapshot} snapshot
   * @param {number} now performance.now()
   */
  render(snapshot, now) {
    const { leader, kpis, series, tops, members, foot } = this.views;
    const body = document.body;
    // Before members.update: a new leader is named from the members known so far.
    leader.render(snapshot);
    body.dataset.epoch = String(snapshot.epoch);
    body.dataset.generatedAt = String(snapshot.generated_at);
    body.dataset.leader = snapshot.leader ?? "";
    kpis.update(snapshot);
    series.update(snapshot);
    tops.update(snapshot.by ?? {}, snapshot.total.count ?? 0);
    members.update(snapshot, now);
    const win = snapshot.window;
    setText(
      foot,
      `window ${fmt.span(win.seconds)} in ${fmt.span(win.bucket_seconds)} buckets · ` +
        `snapshot every ≈${fmt.rate(this.ticks.seconds)} s · schema ${snapshot.schema} · ` +
        `${fmt.count(this.gate.dropped)} snapshots dropped`,
    );
  }

  /** Bring the time-dependent parts up to date (the UI clock calls it). */
  refresh() {
    const now = performance.now();
    const { snapshot, receivedAt } = this.shown;
    const { leader, members, status, demo } = this.views;
    const stale = status.update({
      connection: this.connection,
      snapshot,
      receivedAt,
      tick: this.ticks.seconds,
      now,
    });
    leader.markStale(stale);
    leader.age(snapshot, receivedAt, now);
    members.tick(now);
    demo.setActive(this.connection.state === "open");
  }
}
