// @ts-check
// Which snapshots the page believes, and how often they are expected.
//
// Every snapshot carries the fencing epoch of the leader that published it.  A
// lower epoch than one already shown comes from a deposed leader, so it is
// dropped; within an epoch, a snapshot older than the one shown is dropped too.
// The server does the same per pod; the page repeats it because a reconnect may
// land on another pod, or on a restarted server.
//
// One exception keeps the page from freezing forever: when the lease itself was
// recreated (the demo restarted, the Lease object deleted), epochs start again
// from zero.  A lower epoch is accepted only if it arrives on a different
// connection than the one that delivered the highest epoch, and nothing else
// has arrived for RESET_AFTER_TICKS ticks.  On the connection that delivered
// the highest epoch, a lower epoch is always dropped.

/** @typedef {import("./types.js").Snapshot} Snapshot */

/**
 * What ``SnapshotGate.offer`` decided.
 * @typedef {{accept: true, reason: "first" | "newer-epoch" | "next" | "epoch-reset"}
 *   | {accept: false, reason: string, kind: "duplicate" | "epoch" | "invalid"}} Decision
 */

export const SCHEMA = 1;
export const STALE_AFTER_TICKS = 3;
export const RESET_AFTER_TICKS = 5;

/**
 * A one-line reason why ``value`` is not a schema-1 snapshot, or null.
 * @param {any} value parsed JSON
 * @returns {string | null}
 */
export function invalidReason(value) {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return "not an object";
  if (value.schema !== SCHEMA) return `schema ${JSON.stringify(value.schema)}, expected ${SCHEMA}`;
  if (!Number.isInteger(value.epoch)) return "no epoch";
  if (typeof value.generated_at !== "number") return "no generated_at";
  if (!value.total || typeof value.total.count !== "number") return "no total";
  if (!value.window || typeof value.window.seconds !== "number") return "no window";
  if (!Array.isArray(value.series)) return "no series";
  return null;
}

export class SnapshotGate {
  constructor({ resetAfterTicks = RESET_AFTER_TICKS } = {}) {
    this.resetAfterTicks = resetAfterTicks;
    /** @type {number | null} */
    this.epoch = null;
    /** @type {number | null} */
    this.generatedAt = null;
    /** @type {unknown} */
    this.connection = null;
    /** @type {number | null} */
    this.behindSince = null;
    this.dropped = 0;
  }

  /**
   * Decide on ``snapshot`` that arrived on ``connection`` (any value that
   * differs per websocket) at ``nowMs`` (a monotonic clock), given the
   * expected tick in seconds.  Returns {accept, reason}; reason is "first",
   * "newer-epoch", "next", "epoch-reset", or why it was dropped, and then
   * kind is "duplicate" (a resend after reconnecting), "epoch" or "invalid".
   * @param {Snapshot} snapshot
   * @param {unknown} connection
   * @param {number} nowMs
   * @param {number} tickSeconds
   * @returns {Decision}
   */
  offer(snapshot, connection, nowMs, tickSeconds) {
    const problem = invalidReason(snapshot);
    if (problem !== null) return this.#drop(`invalid: ${problem}`, "invalid");
    const { epoch } = snapshot;
    const generatedAt = snapshot.generated_at;
    if (this.epoch === null) return this.#accept(snapshot, connection, "first");
    if (epoch > this.epoch) return this.#accept(snapshot, connection, "newer-epoch");
    if (epoch === this.epoch) {
      // set with the epoch, so never null here
      if (generatedAt > (this.generatedAt ?? -Infinity)) return this.#accept(snapshot, connection, "next");
      return this.#drop("not newer than the snapshot shown", "duplicate");
    }
    const lower = `epoch ${epoch} is lower than ${this.epoch}`;
    if (connection === this.connection) return this.#drop(`${lower}: a deposed leader`, "epoch");
    if (this.behindSince === null) this.behindSince = nowMs;
    if (nowMs - this.behindSince >= this.resetAfterTicks * tickSeconds * 1000) {
      return this.#accept(snapshot, connection, "epoch-reset");
    }
    return this.#drop(
      `${lower}: a deposed leader, or a new lease (followed if nothing newer comes for ` +
        `${this.resetAfterTicks} ticks)`,
      "epoch",
    );
  }

  /**
   * @param {Snapshot} snapshot
   * @param {unknown} connection
   * @param {"first" | "newer-epoch" | "next" | "epoch-reset"} reason
   * @returns {Decision}
   */
  #accept(snapshot, connection, reason) {
    this.epoch = snapshot.epoch;
    this.generatedAt = snapshot.generated_at;
    this.connection = connection;
    this.behindSince = null;
    return { accept: true, reason };
  }

  /**
   * @param {string} reason
   * @param {"duplicate" | "epoch" | "invalid"} kind
   * @returns {Decision}
   */
  #drop(reason, kind) {
    this.dropped += 1;
    return { accept: false, reason, kind };
  }
}

/**
 * The publishing cadence, learned from the generated_at of consecutive
 * snapshots of one leader (median of the recent gaps), before that the
 * window's bucket length, before that one second.
 */
export class TickEstimator {
  constructor({ keep = 15, fallbackSeconds = 1 } = {}) {
    this.keep = keep;
    this.fallback = fallbackSeconds;
    /** @type {number[]} */
    this.gaps = [];
    /** @type {{epoch: number, at: number} | null} */
    this.last = null;
    /** @type {number | null} */
    this.bucketSeconds = null;
  }

  /** @param {Snapshot} snapshot */
  observe(snapshot) {
    const bucket = snapshot.window && snapshot.window.bucket_seconds;
    if (typeof bucket === "number" && bucket > 0) this.bucketSeconds = bucket;
    const last = this.last;
    this.last = { epoch: snapshot.epoch, at: snapshot.generated_at };
    if (last === null || last.epoch !== snapshot.epoch) return;
    const gap = snapshot.generated_at - last.at;
    if (!(gap > 0)) return;
    this.gaps.push(gap);
    if (this.gaps.length > this.keep) this.gaps.shift();
  }

  get seconds() {
    if (this.gaps.length >= 3) {
      const sorted = [...this.gaps].sort((a, b) => a - b);
      return clamp(sorted[Math.floor(sorted.length / 2)], 0.1, 60);
    }
    return this.bucketSeconds ?? this.fallback;
  }
}

/**
 * @param {number} value
 * @param {number} low
 * @param {number} high
 */
function clamp(value, low, high) {
  return Math.min(high, Math.max(low, value));
}
