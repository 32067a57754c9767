// @ts-check
// The members table: one row per pod in the leader's snapshot, sorted by pod
// name so rows stay put; the leader (by the snapshot's ``leader`` identity) is
// marked.  Heartbeat ages are measured on the server's clock (generated_at minus
// heartbeat_at) plus the time since the snapshot arrived, so a skewed browser
// clock cannot make a pod look dead.

import { h, setAttr, setText, toggleClass } from "./dom.js";
import * as fmt from "./format.js";

// Pods beat every 2 s by default and the leader reads the list on its own beat,
// so ages up to ~4 s are normal; a member expires after 3 beats.
const LATE_HEARTBEAT_S = 6;

/**
 * @typedef {import("./types.js").Snapshot} Snapshot
 * @typedef {import("./types.js").Member} Member
 */

export class MembersTable {
  /** @param {HTMLElement} body the table's <tbody> */
  constructor(body) {
    this.body = body;
    /** @type {Map<string, MemberRow>} by identity */
    this.rows = new Map();
    /** @type {Snapshot | null} */
    this.snapshot = null;
    this.receivedAt = 0;
  }

  /**
   * @param {Snapshot} snapshot
   * @param {number} receivedAt performance.now() at its arrival
   */
  update(snapshot, receivedAt) {
    this.snapshot = snapshot;
    this.receivedAt = receivedAt;
    const members = [...(Array.isArray(snapshot.members) ? snapshot.members : [])].sort((a, b) =>
      String(a.pod).localeCompare(String(b.pod), undefined, { numeric: true }),
    );
    const seen = new Set();
    members.forEach((member, index) => {
      const identity = String(member.identity ?? member.pod);
      seen.add(identity);
      let row = this.rows.get(identity);
      if (!row) {
        row = new MemberRow();
        this.rows.set(identity, row);
      }
      if (this.body.children[index] !== row.root) {
        this.body.insertBefore(row.root, this.body.children[index] ?? null);
      }
      row.update(member, identity === snapshot.leader);
    });
    for (const [identity, row] of this.rows) {
      if (!seen.has(identity)) {
        row.root.remove();
        this.rows.delete(identity);
      }
    }
    if (members.length === 0 && !this.body.querySelector(".none")) {
      this.body.append(h("tr", { class: "none" }, h("td", { colspan: 6 }, "no members reported")));
    } else if (members.length > 0) {
      this.body.querySelector(".none")?.remove();
    }
    this.tick(receivedAt);
  }

  /**
   * Refresh the ages; ``now`` is performance.now().
   * @param {number} now
   */
  tick(now) {
    const snapshot = this.snapshot;
    if (!snapshot) return;
    const since = (now - this.receivedAt) / 1000;
    for (const row of this.rows.values()) row.age(snapshot.generated_at, since);
  }

  /**
   * The pod name for an identity (pod name + "_" + suffix).
   * @param {unknown} identity
   */
  podOf(identity) {
    const members = (this.snapshot && this.snapshot.members) || [];
    const member = members.find((m) => m.identity === identity);
    if (member) return String(member.pod);
    return podName(identity);
  }
}

/**
 * The pod name in an identity: what precedes its last "_".
 * @param {unknown} identity
 */
export function podName(identity) {
  if (typeof identity !== "string" || identity === "") return fmt.MISSING;
  const cut = identity.lastIndexOf("_");
  return cut > 0 ? identity.slice(0, cut) : identity;
}

class MemberRow {
  constructor() {
    this.name = h("span", { class: "pod-name" });
    this.badge = h("span", { class: "badge leader-badge", hidden: true }, "leader");
    // data-label names the value where a phone shows rows as cards (style.css).
    this.partitions = h("td", { class: "partitions", "data-label": "partitions" });
    this.rate = h("td", { class: "r", "data-label": "events/s" });
    this.lag = h("td", { class: "r", "data-label": "lag" });
    this.heartbeat = h("td", { class: "r", "data-label": "heartbeat" });
    this.ready = h("td", { class: "c ready", "data-label": "ready" });
    this.root = h(
      "tr",
      {},
      h("th", { scope: "row" }, this.name, this.badge),
      this.partitions,
      this.rate,
      this.lag,
      this.heartbeat,
      this.ready,
    );
    /** @type {number | null} */
    this.heartbeatAt = null;
  }

  /**
   * @param {Member} member
   * @param {boolean} leads
   */
  update(member, leads) {
    setText(this.name, member.pod ?? fmt.MISSING);
    setAttr(this.root, "title", member.identity ?? null);
    setAttr(this.root, "data-pod", member.pod ?? null);
    setAttr(this.root, "data-leader", leads ? "true" : "false");
    toggleClass(this.root, "is-leader", leads);
    this.badge.hidden = !leads;
    const partitions = Array.isArray(member.partitions) ? member.partitions : [];
    setText(this.partitions, partitions.length ? partitions.join(", ") : "none");
    toggleClass(this.partitions, "muted", partitions.length === 0);
    setText(this.rate, fmt.rate(member.events_per_s));
    setText(this.lag, fmt.count(member.lag));
    toggleClass(this.lag, "warn", typeof member.lag === "number" && member.lag > 10_000);
    setText(this.ready, member.ready ? "✓" : "✗");
    setAttr(this.ready, "title", member.ready ? "ready" : "not ready");
    toggleClass(this.ready, "bad", !member.ready);
    toggleClass(this.ready, "ok", Boolean(member.ready));
    this.heartbeatAt = typeof member.heartbeat_at === "number" ? member.heartbeat_at : null;
  }

  /**
   * @param {number} generatedAt the snapshot's time (the server's clock)
   * @param {number} since seconds since the snapshot arrived
   */
  age(generatedAt, since) {
    if (this.heartbeatAt === null) {
      setText(this.heartbeat, fmt.MISSING);
      return;
    }
    const age = Math.max(0, generatedAt - this.heartbeatAt) + since;
    setText(this.heartbeat, `${fmt.duration(age)} ago`);
    toggleClass(this.heartbeat, "warn", age > LATE_HEARTBEAT_S);
  }
}
