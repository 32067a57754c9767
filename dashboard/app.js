// @ts-check
// The dashboard page: finds its elements, builds the modules, and wires them
// together: one websocket of snapshots in (connection.js), through the epoch
// gate (screen.js, snapshots.js), to the views; a 250 ms UI clock keeps ages,
// the stale state and the reconnect countdown current between ticks.

import { ActivityLog } from "./activity.js";
import { StatsConnection } from "./connection.js";
import { DemoControls } from "./demo.js";
import { byId } from "./dom.js";
import { KpiCards } from "./kpis.js";
import { LeaderFacts } from "./leader.js";
import { MembersTable } from "./members.js";
import { Screen } from "./screen.js";
import { SeriesPanel } from "./series.js";
import { SnapshotGate, TickEstimator } from "./snapshots.js";
import { ConnectionStatus } from "./status.js";
import { TopPanels } from "./topn.js";

const UI_CLOCK_MS = 250;

const activity = new ActivityLog(byId("activity"));
const note = activity.note;
const gate = new SnapshotGate();
const ticks = new TickEstimator();
const members = new MembersTable(byId("members-body"));
const views = {
  leader: new LeaderFacts(
    {
      leader: byId("leader"),
      epoch: byId("epoch"),
      leaderFor: byId("leader-for"),
      memberCount: byId("member-count"),
    },
    members,
    note,
  ),
  kpis: new KpiCards(document),
  series: new SeriesPanel({
    chart: byId("chart"),
    windowLabel: byId("window-label"),
    bucketLabel: byId("bucket-label"),
    meta: byId("chart-meta"),
  }),
  tops: new TopPanels(byId("tops")),
  members,
  status: new ConnectionStatus(
    {
      conn: byId("conn"),
      connText: byId("conn-text"),
      updated: byId("updated"),
      banner: byId("banner"),
      announce: byId("announce"),
    },
    note,
  ),
  demo: new DemoControls(byId("demo"), byId("demo-pods"), byId("demo-message"), { onEvent: note }),
  foot: byId("foot"),
};

const socketUrl = new URL("ws/stats", document.baseURI);
socketUrl.protocol = socketUrl.protocol === "https:" ? "wss:" : "ws:";
const connection = new StatsConnection(socketUrl.href, {
  onMessage: (data, connectionId) => screen.receive(data, connectionId),
  onChange: () => screen.refresh(),
  onEvent: note,
});
const screen = new Screen({ gate, ticks, connection, views, note });

note("page opened");
connection.start();
screen.refresh();
setInterval(() => screen.refresh(), UI_CLOCK_MS);
// For a look from the browser console, and for the browser tests (they read
// shown.snapshot, shown.receivedAt and ticks.seconds); the page does not read it.
Object.assign(globalThis, { dashboard: { gate, ticks, connection, shown: screen.shown } });
