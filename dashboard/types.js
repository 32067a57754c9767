// @ts-check
// The shapes the page reads, for the type checker only (tsc --noEmit, `make
// jscheck`): no other module imports this file at run time, only its types,
// from JSDoc (`import("./types.js").Snapshot`).
//
// A snapshot is schema 1 (aggregator/core/snapshot.py) as /ws/stats sends it.
// The page checks only what snapshots.js's invalidReason requires; the fields
// that live modes or a later server may leave out are typed as possibly
// missing, and the page draws a dash for them.

/**
 * @typedef {object} Window
 * @property {number} seconds
 * @property {number} start
 * @property {number} end
 * @property {number} bucket_seconds
 */

/**
 * @typedef {object} ValueStats
 * @property {number} count
 * @property {number} min
 * @property {number} max
 * @property {number} mean
 * @property {number} p50
 * @property {number} p90
 * @property {number} p99
 */

/**
 * @typedef {object} Total
 * @property {number} count
 * @property {number} [rate_per_s]
 * @property {number} [distinct]
 * @property {ValueStats | null} [value]
 */

/**
 * One key of a dimension's top list.
 * @typedef {object} KeyRow
 * @property {string} key
 * @property {number} count
 * @property {number} [distinct]
 * @property {number | null} [p99]
 */

/**
 * One bucket of the series.
 * @typedef {object} Point
 * @property {number} start
 * @property {number} count
 */

/**
 * @typedef {object} Rejected
 * @property {number} count
 * @property {Record<string, number>} [by_reason]
 */

/**
 * A pod as the leader's member list shows it (ports/members.py's MemberInfo).
 * @typedef {object} Member
 * @property {string} [pod]
 * @property {string} [identity]
 * @property {number} [started_at]
 * @property {number} [heartbeat_at]
 * @property {number[]} [partitions]
 * @property {number} [events_per_s]
 * @property {number} [lag]
 * @property {boolean} [ready]
 */

/**
 * @typedef {object} Snapshot
 * @property {number} schema
 * @property {number} epoch
 * @property {number} generated_at
 * @property {Total} total
 * @property {Window} window
 * @property {Point[]} series
 * @property {Record<string, KeyRow[]>} [by]
 * @property {Rejected} [rejected]
 * @property {number} [late]
 * @property {number} [future]
 * @property {string | null} [leader]
 * @property {number} [leader_since]
 * @property {Member[]} [members]
 */

/**
 * A message for the activity list, and how much it matters.
 * @typedef {"info" | "warn" | "bad"} Level
 * @typedef {(text: string, level?: Level) => void} Note
 */

export {};
