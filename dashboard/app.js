// The dashboard: one websocket of snapshots in, the page out.
//
// Snapshots pass the epoch gate (snapshots.js) before anything is drawn; the
// header always names the leader of the snapshot on screen.  A 250 ms UI clock
// keeps ages, the stale state and the reconnect countdown current between ticks.

import { SeriesChart } from "./chart.js";
import { SERVICE_RESTART, StatsConnection, TRY_AGAIN_LATER } from "./connection.js";
import { DemoControls } from "./demo.js";
import { byId, h, setAttr, setText, toggleClass } from "./dom.js";
import * as fmt from "./format.js";
import { MembersTable, podName } from "./members.js";
import { STALE_AFTER_TICKS, SnapshotGate, TickEstimator } from "./snapshots.js";
import { TopPanels } from "./topn.js";

const UI_CLOCK_MS = 250;
const ACTIVITY_ROWS = 40;
const TITLE = "stream-aggregator";
const ANNOUNCE = {
  live: "Live: numbers are current.",
  stale: "Stale: no new snapshot; the numbers shown are old.",
  reconnecting: "Disconnected from the server; reconnecting.",
  waiting: "Connected; waiting for the first snapshot.",
};

const body = document.body;
const view = {
  leader: byId("leader"),
  leaderFact: byId("leader").closest(".fact"),
  epoch: byId("epoch"),
  leaderFor: byId("leader-for"),
  memberCount: byId("member-count"),
  conn: byId("conn"),
  connText: byId("conn-text"),
  updated: byId("updated"),
  banner: byId("banner"),
  windowLabel: byId("window-label"),
  bucketLabel: byId("bucket-label"),
  chartMeta: byId("chart-meta"),
  activity: byId("activity"),
  foot: byId("foot"),
  announce: byId("announce"),
  kpi: Object.fromEntries(
    [...document.querySelectorAll(".kpi")].map((card) => [
      card.dataset.kpi,
      { card, num: card.querySelector(".num"), note: card.querySelector(".note") },
    ]),
  ),
};

const gate = new SnapshotGate();
const ticks = new TickEstimator();
const chart = new SeriesChart(byId("chart"));
const tops = new TopPanels(byId("tops"));
const members = new MembersTable(byId("members-body"));
const demo = new DemoControls(byId("demo"), byId("demo-pods"), byId("demo-message"), {
  onEvent: (text, level) => note(text, level),
});

/** What is on screen: the snapshot, when it arrived, and what we know of its leader. */
const shown = {
  snapshot: null,
  receivedAt: 0,
  leader: null,
  leaderSeenAt: 0,
  leaderChangedAt: null,
  stale: false,
  dropReason: null,
};

const socketUrl = new URL("ws/stats", document.baseURI);
socketUrl.protocol = socketUrl.protocol === "https:" ? "wss:" : "ws:";
const connection = new StatsConnection(socketUrl.href, {
  onMessage: receive,
  onChange: () => refresh(),
  onEvent: (text, level) => note(text, level),
});

// -- snapshots ------------------------------------------------------------------

function receive(data, connectionId) {
  const now = performance.now();
  let snapshot;
  try {
    snapshot = JSON.parse(data);
  } catch {
    note("ignored a message that is not JSON", "warn");
    return;
  }
  const decision = gate.offer(snapshot, connectionId, now, ticks.seconds);
  if (!decision.accept) {
    if (decision.kind !== "duplicate" && decision.reason !== shown.dropReason) {
      note(`ignoring snapshots: ${decision.reason}`, "warn");
      shown.dropReason = decision.reason;
    }
    return;
  }
  shown.dropReason = null;
  if (decision.reason === "epoch-reset") {
    note(
      `epochs started again at ${snapshot.epoch} (the lease was recreated); following the new leader`,
      "warn",
    );
  }
  ticks.observe(snapshot);
  const previous = shown.snapshot;
  shown.snapshot = snapshot;
  shown.receivedAt = now;
  trackLeader(snapshot, previous, now);
  render(snapshot, now);
  refresh();
}

function trackLeader(snapshot, previous, now) {
  const leader = snapshot.leader ?? null;
  if (shown.leader === null) {
    shown.leader = leader;
    shown.leaderSeenAt = now;
    note(`leader is ${podName(leader)} (epoch ${snapshot.epoch})`);
    return;
  }
  if (leader !== shown.leader) {
    note(
      `leader changed: ${podName(shown.leader)} → ${podName(leader)} ` +
        `(epoch ${previous?.epoch ?? "?"} → ${snapshot.epoch})`,
      "warn",
    );
    shown.leader = leader;
    shown.leaderChangedAt = now;
    view.leaderFact.classList.remove("changed");
    void view.leaderFact.offsetWidth; // restart the highlight animation
    view.leaderFact.classList.add("changed");
  }
}

function render(snapshot, now) {
  const total = snapshot.total ?? {};
  const value = total.value ?? null;
  const win = snapshot.window ?? {};

  setText(view.leader, members.podOf(snapshot.leader));
  setAttr(view.leader, "title", snapshot.leader ?? null);
  setAttr(view.leader, "data-identity", snapshot.leader ?? null);
  setText(view.epoch, String(snapshot.epoch));
  const memberList = Array.isArray(snapshot.members) ? snapshot.members : [];
  setText(view.memberCount, String(memberList.length));
  setAttr(view.memberCount, "title", memberList.map((m) => m.pod).join(", "));
  body.dataset.epoch = String(snapshot.epoch);
  body.dataset.generatedAt = String(snapshot.generated_at);
  body.dataset.leader = snapshot.leader ?? "";

  kpi("count", total.count, fmt.count(total.count));
  setText(view.kpi.count.note, `${fmt.clock(win.start)} – ${fmt.clock(win.end)}`);
  kpi("rate", total.rate_per_s, fmt.rate(total.rate_per_s));
  setAttr(view.kpi.rate.card, "title", `events in the window / ${win.seconds} s; "now" is the last full bucket`);
  const series = Array.isArray(snapshot.series) ? snapshot.series : [];
  // The newest bucket is still filling; "now" is the last settled one.
  const settled = series.length > 1 ? series.slice(0, -1) : series;
  const latest = settled.length ? settled[settled.length - 1] : null;
  setText(
    view.kpi.rate.note,
    latest ? `now ${fmt.count(Math.round(latest.count / (win.bucket_seconds || 1)))}/s` : "\u00a0",
  );
  kpi("distinct", total.distinct, fmt.count(total.distinct));
  kpi("p50", value?.p50, fmt.millis(value?.p50));
  kpi("p90", value?.p90, fmt.millis(value?.p90));
  kpi("p99", value?.p99, fmt.millis(value?.p99));
  setText(view.kpi.p50.note, value ? `mean ${fmt.millis(value.mean)} ms` : "no values");
  setText(view.kpi.p90.note, value ? `min ${fmt.millis(value.min)} ms` : "\u00a0");
  setText(view.kpi.p99.note, value ? `max ${fmt.millis(value.max)} ms` : "\u00a0");

  const rejected = snapshot.rejected ?? { count: 0, by_reason: {} };
  kpi("rejected", rejected.count, fmt.count(rejected.count));
  const reasons = Object.entries(rejected.by_reason ?? {})
    .filter(([, n]) => n > 0)
    .sort((a, b) => b[1] - a[1]);
  const input = (total.count ?? 0) + (rejected.count ?? 0);
  setText(
    view.kpi.rejected.note,
    reasons.length ? `${fmt.percent(rejected.count / input)} of input` : "no bad input",
  );
  setAttr(
    view.kpi.rejected.card,
    "title",
    reasons.length ? reasons.map(([r, n]) => `${r.replaceAll("_", " ")}: ${fmt.count(n)}`).join("\n") : "no bad input",
  );
  toggleClass(view.kpi.rejected.card, "attention", rejected.count > 0 && rejected.count / input > 0.05);
  kpi("late", snapshot.late, fmt.count(snapshot.late));
  setText(view.kpi.late.note, `future: ${fmt.count(snapshot.future)}`);

  setText(view.windowLabel, fmt.span(win.seconds));
  setText(view.bucketLabel, win.bucket_seconds === 1 ? "second" : `${fmt.span(win.bucket_seconds)} bucket`);
  chart.update({
    series,
    start: win.start,
    end: win.end,
    bucketSeconds: win.bucket_seconds || 1,
  });
  let peak = null;
  for (const point of settled) if (peak === null || point.count > peak.count) peak = point;
  setText(
    view.chartMeta,
    latest
      ? `last full ${win.bucket_seconds === 1 ? "second" : "bucket"} ${fmt.count(latest.count)} · ` +
          `peak ${fmt.count(peak.count)} at ${fmt.clock(peak.start)}`
      : "",
  );

  tops.update(snapshot.by ?? {}, total.count ?? 0);
  members.update(snapshot, now);

  setText(
    view.foot,
    `window ${fmt.span(win.seconds)} in ${fmt.span(win.bucket_seconds)} buckets · ` +
      `snapshot every ≈${fmt.rate(ticks.seconds)} s · schema ${snapshot.schema} · ` +
      `${fmt.count(gate.dropped)} snapshots dropped`,
  );
}

function kpi(name, raw, text) {
  const item = view.kpi[name];
  setText(item.num, text);
  setAttr(item.num, "data-value", typeof raw === "number" ? raw : null);
}

// -- state between snapshots ----------------------------------------------------------

function refresh() {
  const now = performance.now();
  const snapshot = shown.snapshot;
  const tick = ticks.seconds;
  const age = snapshot ? (now - shown.receivedAt) / 1000 : null;
  const stale = snapshot !== null && age > STALE_AFTER_TICKS * tick;

  let state;
  if (connection.state === "open") state = snapshot ? (stale ? "stale" : "live") : "waiting";
  else if (connection.state === "waiting" || connection.everOpened) state = "reconnecting";
  else state = "connecting";

  if (stale !== shown.stale) {
    if (stale) note(`no snapshot for ${fmt.duration(age)}: showing stale numbers`, "bad");
    else note("snapshots are flowing again");
    shown.stale = stale;
  }
  if (state !== body.dataset.state) setText(view.announce, ANNOUNCE[state] ?? "");
  body.dataset.state = state;
  body.dataset.stale = String(stale);
  toggleClass(body, "is-stale", stale);
  setAttr(view.conn, "data-state", state);

  let pill;
  switch (state) {
    case "live":
      pill = "live";
      break;
    case "stale":
      pill = `stale · ${fmt.duration(age)}`;
      break;
    case "waiting":
      pill = "connected · waiting";
      break;
    case "reconnecting":
      pill =
        connection.state === "waiting" && connection.retryAt !== null
          ? `reconnecting in ${fmt.seconds((connection.retryAt - now) / 1000)}`
          : "reconnecting…";
      break;
    default:
      pill = "connecting…";
  }
  setText(view.connText, pill);
  setText(
    view.updated,
    snapshot ? `as of ${fmt.clock(snapshot.generated_at)} · ${fmt.duration(age)} ago` : "no data yet",
  );
  const title = state === "live" ? TITLE : `⚠ ${state} · ${TITLE}`;
  if (document.title !== title) document.title = title;
  setAttr(
    view.leader.closest("dd"),
    "title",
    stale ? "the leader of the last snapshot received; it may have changed since" : null,
  );

  renderBanner(state, stale, age, tick, now);
  renderLeaderAge(snapshot, now);
  members.tick(now);
  demo.setActive(connection.state === "open");
}

function renderBanner(state, stale, age, tick, now) {
  const snapshot = shown.snapshot;
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
  setText(view.banner, text);
  view.banner.hidden = text === "";
  setAttr(view.banner, "data-kind", stale ? "stale" : "info");
}

function describeCloseShort(code) {
  if (code === SERVICE_RESTART) return "server restarting";
  if (code === TRY_AGAIN_LATER) return "no pod ready";
  if (code === 1006) return "connection lost";
  return `closed with ${code}`;
}

function renderLeaderAge(snapshot, now) {
  if (!snapshot) return;
  const since = (now - shown.receivedAt) / 1000;
  if (typeof snapshot.leader_since === "number") {
    setText(view.leaderFor, fmt.duration(snapshot.generated_at - snapshot.leader_since + since));
    setAttr(view.leaderFor, "title", `leading since ${fmt.clock(snapshot.leader_since)}`);
  } else if (shown.leaderChangedAt !== null) {
    setText(view.leaderFor, fmt.duration((now - shown.leaderChangedAt) / 1000));
    setAttr(view.leaderFor, "title", "since this page saw the leader change");
  } else {
    setText(view.leaderFor, `≥ ${fmt.duration((now - shown.leaderSeenAt) / 1000)}`);
    setAttr(
      view.leaderFor,
      "title",
      "this page has not seen this leader take over; it has led at least this long",
    );
  }
}

// -- the activity list -----------------------------------------------------------

function note(text, level = "info") {
  const row = h(
    "li",
    { class: `level-${level}` },
    h("time", {}, fmt.clock(Date.now() / 1000)),
    h("span", {}, text),
  );
  view.activity.prepend(row);
  while (view.activity.children.length > ACTIVITY_ROWS) view.activity.lastElementChild.remove();
}

// -- start ------------------------------------------------------------------------

note("page opened");
connection.start();
refresh();
setInterval(refresh, UI_CLOCK_MS);
// For a look from the browser console; the page itself does not read it.
globalThis.dashboard = { gate, ticks, connection, shown };
