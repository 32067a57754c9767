// @ts-check
// The header's facts about the leader: who (by pod name), the epoch, how long it
// has led, and how many members it reports.  Leader changes are noted in the
// activity list and flash the leader fact.

import { setAttr, setText } from "./dom.js";
import * as fmt from "./format.js";
import { podName } from "./members.js";

/**
 * @typedef {import("./types.js").Snapshot} Snapshot
 * @typedef {import("./types.js").Note} Note
 * @typedef {import("./members.js").MembersTable} MembersTable
 */

export class LeaderFacts {
  /**
   * @param {{leader: HTMLElement, epoch: HTMLElement, leaderFor: HTMLElement,
   *          memberCount: HTMLElement}} elements
   * @param {MembersTable} members names pods by identity
   * @param {Note} note
   */
  constructor({ leader, epoch, leaderFor, memberCount }, members, note) {
    this.leader = leader;
    this.fact = leader.closest(".fact");
    this.epoch = epoch;
    this.leaderFor = leaderFor;
    this.memberCount = memberCount;
    this.members = members;
    this.note = note;
    /** @type {string | null} the leader of the snapshot on screen */
    this.current = null;
    this.seenAt = 0;
    /** @type {number | null} when this page saw the leader change (performance.now()) */
    this.changedAt = null;
  }

  /**
   * Note a new leader; ``previous`` is the snapshot shown before.
   * @param {Snapshot} snapshot
   * @param {Snapshot | null} previous
   * @param {number} now performance.now()
   */
  track(snapshot, previous, now) {
    const leader = snapshot.leader ?? null;
    if (this.current === null) {
      this.current = leader;
      this.seenAt = now;
      this.note(`leader is ${podName(leader)} (epoch ${snapshot.epoch})`);
      return;
    }
    if (leader !== this.current) {
      this.note(
        `leader changed: ${podName(this.current)} → ${podName(leader)} ` +
          `(epoch ${previous?.epoch ?? "?"} → ${snapshot.epoch})`,
        "warn",
      );
      this.current = leader;
      this.changedAt = now;
      if (this.fact instanceof HTMLElement) {
        this.fact.classList.remove("changed");
        void this.fact.offsetWidth; // restart the highlight animation
        this.fact.classList.add("changed");
      }
    }
  }

  /** @param {Snapshot} snapshot */
  render(snapshot) {
    setText(this.leader, this.members.podOf(snapshot.leader));
    setAttr(this.leader, "title", snapshot.leader ?? null);
    setAttr(this.leader, "data-identity", snapshot.leader ?? null);
    setText(this.epoch, String(snapshot.epoch));
    const memberList = Array.isArray(snapshot.members) ? snapshot.members : [];
    setText(this.memberCount, String(memberList.length));
    setAttr(this.memberCount, "title", memberList.map((m) => m.pod).join(", "));
  }

  /**
   * How long the leader has led, as of ``now``.
   * @param {Snapshot | null} snapshot the snapshot on screen
   * @param {number} receivedAt when it arrived (performance.now())
   * @param {number} now performance.now()
   */
  age(snapshot, receivedAt, now) {
    if (!snapshot) return;
    const since = (now - receivedAt) / 1000;
    if (typeof snapshot.leader_since === "number") {
      setText(this.leaderFor, fmt.duration(snapshot.generated_at - snapshot.leader_since + since));
      setAttr(this.leaderFor, "title", `leading since ${fmt.clock(snapshot.leader_since)}`);
    } else if (this.changedAt !== null) {
      setText(this.leaderFor, fmt.duration((now - this.changedAt) / 1000));
      setAttr(this.leaderFor, "title", "since this page saw the leader change");
    } else {
      setText(this.leaderFor, `≥ ${fmt.duration((now - this.seenAt) / 1000)}`);
      setAttr(
        this.leaderFor,
        "title",
        "this page has not seen this leader take over; it has led at least this long",
      );
    }
  }

  /** @param {boolean} stale whether the snapshot on screen is old */
  markStale(stale) {
    const fact = this.leader.closest("dd");
    if (fact === null) return;
    setAttr(
      fact,
      "title",
      stale ? "the leader of the last snapshot received; it may have changed since" : null,
    );
  }
}
