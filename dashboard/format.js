// @ts-check
// Number, duration and time formatting for the dashboard.  Every function takes
// plain numbers and returns display text; missing values become an em dash.

export const MISSING = "—";

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const oneDecimal = new Intl.NumberFormat(undefined, {
  minimumFractionDigits: 1,
  maximumFractionDigits: 1,
});
const twoDecimals = new Intl.NumberFormat(undefined, {
  minimumFractionDigits: 2,
  maximumFractionDigits: 2,
});
const clockFormat = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  hourCycle: "h23",
});
const shortClockFormat = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  hourCycle: "h23",
});

/**
 * @param {unknown} value
 * @returns {value is number}
 */
function usable(value) {
  return typeof value === "number" && Number.isFinite(value);
}

/**
 * A count with thousands separators: 1,234,567.
 * @param {unknown} value
 * @returns {string}
 */
export function count(value) {
  return usable(value) ? integer.format(value) : MISSING;
}

/**
 * A rate per second: one decimal below 10,000/s, whole numbers above.
 * @param {unknown} value
 * @returns {string}
 */
export function rate(value) {
  if (!usable(value)) return MISSING;
  return Math.abs(value) < 10_000 ? oneDecimal.format(value) : integer.format(value);
}

/**
 * A duration in milliseconds, about three significant digits (the quantile
 * sketch is accurate to 1 %): 0.42, 12.4, 148, 1,211.
 * @param {unknown} value
 * @returns {string}
 */
export function millis(value) {
  if (!usable(value)) return MISSING;
  const size = Math.abs(value);
  if (size >= 100 || size === 0) return integer.format(value);
  if (size >= 10) return oneDecimal.format(value);
  return twoDecimals.format(value);
}

/**
 * A share in [0, 1] as a percentage: 12.3%, 0.4%, <0.1%.
 * @param {unknown} share
 * @returns {string}
 */
export function percent(share) {
  if (!usable(share)) return MISSING;
  if (share > 0 && share < 0.001) return "<0.1%";
  return `${oneDecimal.format(share * 100)}%`;
}

/**
 * A length of time for people: 0.4 s, 12 s, 3 m 05 s, 2 h 04 m, 3 d 4 h.
 * @param {unknown} seconds
 * @returns {string}
 */
export function duration(seconds) {
  if (!usable(seconds)) return MISSING;
  const s = Math.max(0, seconds);
  if (s < 10) return `${oneDecimal.format(s)} s`;
  if (s < 60) return `${Math.floor(s)} s`;
  const minutes = Math.floor(s / 60);
  if (minutes < 60) return `${minutes} m ${pad(Math.floor(s % 60))} s`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return `${hours} h ${pad(minutes % 60)} m`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

/**
 * Whole seconds, for countdowns: "3 s".
 * @param {unknown} value
 * @returns {string}
 */
export function seconds(value) {
  if (!usable(value)) return MISSING;
  return `${Math.max(0, Math.ceil(value))} s`;
}

/**
 * Wall-clock time of an epoch-seconds timestamp, in the viewer's zone: 14:03:09.
 * @param {unknown} epochSeconds
 * @returns {string}
 */
export function clock(epochSeconds) {
  return usable(epochSeconds) ? clockFormat.format(new Date(epochSeconds * 1000)) : MISSING;
}

/**
 * Hours and minutes only: 14:03.
 * @param {unknown} epochSeconds
 * @returns {string}
 */
export function shortClock(epochSeconds) {
  return usable(epochSeconds) ? shortClockFormat.format(new Date(epochSeconds * 1000)) : MISSING;
}

/**
 * A window length for titles: "5 min", "90 s", "2 h".
 * @param {unknown} totalSeconds
 * @returns {string}
 */
export function span(totalSeconds) {
  if (!usable(totalSeconds)) return MISSING;
  if (totalSeconds % 3600 === 0) return `${totalSeconds / 3600} h`;
  if (totalSeconds % 60 === 0) return `${totalSeconds / 60} min`;
  return `${totalSeconds} s`;
}

/** @param {number} n */
function pad(n) {
  return n < 10 ? `0${n}` : String(n);
}
