// Human formatting of counts, bytes, rates, durations and times. Times are
// shown in UTC, as the alerts and the SIEM show them.

const NUM = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

// int: a count with thousands separators, e.g. 1,234,567.
export function int(n) {
  if (!Number.isFinite(n)) return '–';
  return NUM.format(Math.round(n));
}

// sig3 gives three significant digits without trailing zeros.
function sig3(v) {
  if (v === 0) return '0';
  const digits = v >= 100 ? 0 : v >= 10 ? 1 : 2;
  return v.toFixed(digits).replace(/\.0+$|(\.\d*[1-9])0+$/, '$1');
}

// compact: 950, 12.3k, 4.5M, 1.2G.
export function compact(n) {
  if (!Number.isFinite(n)) return '–';
  const a = Math.abs(n);
  if (a < 1000) return a < 10 && a !== Math.round(a) ? sig3(n) : String(Math.round(n));
  const units = ['k', 'M', 'G', 'T', 'P'];
  let v = a;
  let u = -1;
  while (v >= 999.5 && u < units.length - 1) { v /= 1000; u++; }
  return (n < 0 ? '-' : '') + sig3(v) + units[u];
}

// bytes in binary units: 512 B, 1.5 KiB, 12 MiB.
export function bytes(n) {
  if (!Number.isFinite(n)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let v = Math.abs(n);
  let u = 0;
  while (v >= 1023.5 && u < units.length - 1) { v /= 1024; u++; }
  const s = u === 0 ? String(Math.round(v)) : sig3(v);
  return (n < 0 ? '-' : '') + s + ' ' + units[u];
}

export function rate(n, unit) {
  return compact(n) + (unit ? ' ' + unit : '') + '/s';
}

export function byteRate(n) {
  return bytes(n) + '/s';
}

// duration in seconds, two units at most: 12 s, 3 min 5 s, 2 h 4 min, 3 d 2 h.
export function duration(sec) {
  if (!Number.isFinite(sec)) return '–';
  const s = Math.max(0, Math.round(sec));
  if (s < 60) return s + ' s';
  const units = [[86400, 'd'], [3600, 'h'], [60, 'min'], [1, 's']];
  for (let i = 0; i < units.length - 1; i++) {
    const [size, name] = units[i];
    if (s < size) continue;
    const q = Math.floor(s / size);
    const [nextSize, nextName] = units[i + 1];
    const r = Math.floor((s - q * size) / nextSize);
    return q + ' ' + name + (r > 0 ? ' ' + r + ' ' + nextName : '');
  }
  return s + ' s';
}

// ago: how long before now (both Dates), e.g. "12 s ago".
export function ago(t, now) {
  if (!t) return 'never';
  const sec = (now - t) / 1000;
  if (sec < 1) return 'just now';
  return duration(sec) + ' ago';
}

// parseTime reads an RFC 3339 time; Go's zero time and garbage give null.
export function parseTime(s) {
  if (typeof s !== 'string' || s === '') return null;
  const ms = Date.parse(s);
  if (!Number.isFinite(ms) || ms <= 0) return null;
  return new Date(ms);
}

function pad(n, w) {
  return String(n).padStart(w || 2, '0');
}

// clock: 15:04:05 (UTC).
export function clock(d) {
  if (!d) return '–';
  return pad(d.getUTCHours()) + ':' + pad(d.getUTCMinutes()) + ':' + pad(d.getUTCSeconds());
}

// hhmm: 15:04 (UTC), for chart axes.
export function hhmm(d) {
  return pad(d.getUTCHours()) + ':' + pad(d.getUTCMinutes());
}

// stamp: 2006-01-02 15:04:05Z, the full time for titles and the detail panel.
export function stamp(d) {
  if (!d) return '–';
  return d.getUTCFullYear() + '-' + pad(d.getUTCMonth() + 1) + '-' + pad(d.getUTCDate()) +
    ' ' + clock(d) + 'Z';
}

// when: the clock alone for today (relative to now), the date too otherwise.
export function when(d, now) {
  if (!d) return '–';
  if (now && d.toISOString().slice(0, 10) === now.toISOString().slice(0, 10)) return clock(d);
  return stamp(d);
}

export function percent(x) {
  if (!Number.isFinite(x)) return '–';
  const p = x * 100;
  return (p > 0 && p < 1 ? p.toFixed(1) : String(Math.round(p))) + '%';
}

// severityBand names a CEF severity the way the forwarder maps it to syslog:
// 9-10 critical, 7-8 high, 4-6 medium, 1-3 low, 0 none.
export function severityBand(s) {
  if (s >= 9) return 'critical';
  if (s >= 7) return 'high';
  if (s >= 4) return 'medium';
  if (s >= 1) return 'low';
  return 'none';
}
