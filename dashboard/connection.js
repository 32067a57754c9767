// @ts-check
// The websocket to /ws/stats, kept open: reconnect with exponential backoff and
// jitter, quickly after a "service restart" close (1012, a pod shutting down:
// behind a Service the next attempt reaches another pod), and give up on a
// socket that stays silent for far longer than any failover.

export const SERVICE_RESTART = 1012;
export const GOING_AWAY = 1001;
export const TRY_AGAIN_LATER = 1013;
const SILENT_SOCKET = 4000;

/**
 * @typedef {import("./types.js").Note} Note
 * @typedef {"idle" | "connecting" | "open" | "waiting"} ConnectionState
 * @typedef {{code: number, reason: string, at: number}} Close
 */

export class StatsConnection {
  /**
   * @param {string} url websocket URL
   * @param {{onMessage: (data: string, connection: number) => void,
   *          onChange: (connection: StatsConnection) => void,
   *          onEvent?: Note}} handlers
   * @param {{baseDelayMs?: number, maxDelayMs?: number, restartDelayMs?: number,
   *          silentAfterMs?: number}} [options]
   */
  constructor(
    url,
    handlers,
    { baseDelayMs = 500, maxDelayMs = 15_000, restartDelayMs = 250, silentAfterMs = 45_000 } = {},
  ) {
    this.url = url;
    this.handlers = handlers;
    this.baseDelayMs = baseDelayMs;
    this.maxDelayMs = maxDelayMs;
    this.restartDelayMs = restartDelayMs;
    this.silentAfterMs = silentAfterMs;
    /** @type {WebSocket | null} */
    this.socket = null;
    this.id = 0;
    /** @type {ConnectionState} */
    this.state = "idle";
    this.failures = 0;
    /** @type {number | null} when the next attempt starts (performance.now()) */
    this.retryAt = null;
    /** @type {Close | null} why the current outage began */
    this.lastClose = null;
    this.lastAttemptOpened = false;
    /** @type {number | null} */
    this.lastMessageAt = null;
    this.everOpened = false;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._timer = undefined;
    /** @type {ReturnType<typeof setTimeout> | undefined} */
    this._watchdog = undefined;
  }

  start() {
    window.addEventListener("online", () => this.retryNow("network is back"));
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.retryNow("page is visible again");
    });
    this._open();
  }

  /**
   * Skip the rest of the backoff (e.g. the network came back).
   * @param {string} why
   */
  retryNow(why) {
    if (this.state !== "waiting") return;
    this.handlers.onEvent?.(`retrying now: ${why}`);
    clearTimeout(this._timer);
    this._open();
  }

  _open() {
    this.id += 1;
    const id = this.id;
    this.state = "connecting";
    this.retryAt = null;
    this._changed();
    let socket;
    try {
      socket = new WebSocket(this.url);
    } catch (error) {
      this.handlers.onEvent?.(`cannot open the websocket: ${error}`, "bad");
      this._scheduleRetry(null);
      return;
    }
    this.socket = socket;
    let received = false;
    socket.onopen = () => {
      if (id !== this.id) return;
      this.state = "open";
      this.lastMessageAt = performance.now();
      this.handlers.onEvent?.(this.everOpened ? "reconnected" : "connected");
      this.everOpened = true;
      this._armWatchdog();
      this._changed();
    };
    socket.onmessage = (message) => {
      if (id !== this.id) return;
      this.lastMessageAt = performance.now();
      if (!received) {
        received = true;
        this.failures = 0; // only a socket that delivers counts as a success
      }
      this._armWatchdog();
      this.handlers.onMessage(message.data, id);
    };
    // An error is always followed by close; the browser logs the reason itself.
    socket.onerror = () => {};
    socket.onclose = (event) => {
      if (id !== this.id) return;
      this.socket = null;
      clearTimeout(this._watchdog);
      const wasOpen = this.state === "open";
      if (wasOpen) {
        // Why the outage began; failed attempts after it do not overwrite it.
        this.lastClose = { code: event.code, reason: event.reason, at: Date.now() / 1000 };
        this.handlers.onEvent?.(
          describeClose(event),
          event.code === SERVICE_RESTART ? "warn" : "bad",
        );
      }
      this.lastAttemptOpened = wasOpen;
      this._scheduleRetry(event.code);
    };
  }

  /** @param {number | null} code the close code, null if the socket never opened */
  _scheduleRetry(code) {
    let delay;
    if ((code === SERVICE_RESTART || code === GOING_AWAY) && this.failures === 0) {
      delay = this.restartDelayMs * (0.5 + Math.random());
    } else {
      const ceiling = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** this.failures);
      delay = ceiling * (0.5 + Math.random() / 2);
    }
    this.failures += 1;
    this.state = "waiting";
    this.retryAt = performance.now() + delay;
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._open(), delay);
    this._changed();
  }

  _armWatchdog() {
    clearTimeout(this._watchdog);
    const id = this.id;
    this._watchdog = setTimeout(() => {
      if (id !== this.id || this.socket === null) return;
      this.handlers.onEvent?.(`no message for ${Math.round(this.silentAfterMs / 1000)} s; reconnecting`, "warn");
      this.socket.close(SILENT_SOCKET, "silent");
    }, this.silentAfterMs);
  }

  _changed() {
    this.handlers.onChange(this);
  }
}

/** @param {{code: number, reason: string}} event a CloseEvent */
export function describeClose(event) {
  const why = event.reason ? `: ${event.reason}` : "";
  switch (event.code) {
    case SERVICE_RESTART:
      return `server is restarting (close 1012${why})`;
    case GOING_AWAY:
      return `server went away (close 1001${why})`;
    case TRY_AGAIN_LATER:
      return `server has no pod ready (close 1013${why})`;
    case 1006:
      return "connection lost";
    default:
      return `connection closed (code ${event.code}${why})`;
  }
}
