// Line charts drawn as SVG by hand: a y axis from 0 with round ticks, time
// ticks on the x axis, one path per line, a legend with the latest values and
// a crosshair that reads out the values under the pointer.
//
// For tests, each chart is <svg class="chart" data-series="…"
// data-points="N">, N the number of samples, and each line a
// <path class="line" data-points="M"> with M points drawn (M < N only where a
// line has gaps).

import { clock, hhmm } from './format.js';

const NS = 'http://www.w3.org/2000/svg';
const H = 170;
const M = { left: 64, right: 10, top: 10, bottom: 22 };
const COLOURS = 8; // classes s0..s7 in style.css

function svg(tag, attrs) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}

// niceStep: a round tick step, 1, 2 or 5 times a power of ten, so that max
// fits in about `ticks` steps. With base 1024 the step is a round number of
// B, KiB, MiB, … so that the byte labels read well.
function niceStep(max, ticks, base) {
  let unit = 1;
  if (base === 1024) while (max / unit >= 1024) unit *= 1024;
  const raw = max / unit / ticks;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const f = raw / mag;
  const m = f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10;
  return m * mag * unit;
}

const TIME_STEPS = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200];

// draw replaces the content of box with a chart of spec:
//   series: the data-series name; times: Unix seconds, oldest first;
//   lines: [{name, values, gapsAtZero}]; format(v): axis and readout text;
//   base: 1024 for byte scales; empty: the text when there are no samples.
export function draw(box, spec) {
  const times = Array.isArray(spec.times) ? spec.times : [];
  const lines = (spec.lines || []).map((l, i) => ({
    name: l.name,
    values: Array.isArray(l.values) ? l.values : [],
    gapsAtZero: !!l.gapsAtZero,
    colour: 's' + (i % COLOURS),
  }));
  const n = times.length;
  // Draw at the box's own width, so that text is not scaled.
  const W = Math.max(280, Math.round(box.clientWidth) || 640);
  const root = svg('svg', {
    class: 'chart',
    viewBox: `0 0 ${W} ${H}`,
    role: 'img',
    'aria-label': spec.label || spec.series,
    'data-series': spec.series,
    'data-points': n,
    'data-lines': lines.length,
  });
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;

  if (n === 0 || lines.length === 0) {
    const t = svg('text', { x: W / 2, y: H / 2, class: 'empty', 'text-anchor': 'middle' });
    t.textContent = spec.empty || 'no samples yet';
    root.appendChild(t);
    box.replaceChildren(root);
    return;
  }

  let max = 0;
  for (const l of lines) {
    for (let i = 0; i < n; i++) {
      const v = l.values[i];
      if (Number.isFinite(v) && v > max) max = v;
    }
  }
  if (max <= 0) max = 1;
  const step = niceStep(max, 4, spec.base);
  const top = Math.ceil(max / step) * step;
  const t0 = times[0];
  const t1 = times[n - 1];
  const x = (t) => M.left + (t1 > t0 ? ((t - t0) / (t1 - t0)) * pw : pw / 2);
  const y = (v) => M.top + ph - (v / top) * ph;

  // Grid and y labels.
  for (let v = 0; v <= top + step / 2; v += step) {
    const yy = y(v).toFixed(1);
    root.appendChild(svg('line', { class: 'gridline', x1: M.left, x2: W - M.right, y1: yy, y2: yy }));
    const label = svg('text', { class: 'axis', x: M.left - 6, y: yy, 'text-anchor': 'end', 'dominant-baseline': 'middle' });
    label.textContent = spec.format(v);
    root.appendChild(label);
  }
  // Time labels on round times.
  const span = t1 - t0;
  const tstep = TIME_STEPS.find((s) => span / s <= 6) || Math.ceil(span / 6 / 3600) * 3600;
  for (let t = Math.ceil(t0 / tstep) * tstep; t <= t1; t += tstep) {
    const xx = x(t);
    root.appendChild(svg('line', { class: 'tick', x1: xx.toFixed(1), x2: xx.toFixed(1), y1: M.top + ph, y2: M.top + ph + 4 }));
    // A label centred on a tick near the right edge would be cut: end it there.
    const nearEdge = xx > W - 24;
    const label = svg('text', { class: 'axis', x: nearEdge ? W - 1 : xx.toFixed(1), y: H - 4, 'text-anchor': nearEdge ? 'end' : 'middle' });
    const d = new Date(t * 1000);
    label.textContent = tstep < 60 ? clock(d) : hhmm(d);
    root.appendChild(label);
  }
  root.appendChild(svg('line', { class: 'baseline', x1: M.left, x2: W - M.right, y1: M.top + ph, y2: M.top + ph }));

  // The lines.
  for (const l of lines) {
    let d = '';
    let drawn = 0;
    let pen = false;
    let only = -1;
    for (let i = 0; i < n; i++) {
      const v = l.values[i];
      if (!Number.isFinite(v) || (l.gapsAtZero && v === 0)) {
        pen = false;
        continue;
      }
      d += (pen ? 'L' : 'M') + x(times[i]).toFixed(1) + ' ' + y(v).toFixed(1);
      pen = true;
      drawn++;
      only = i;
    }
    const path = svg('path', { class: 'line ' + l.colour, d: d || 'M0 0', 'data-points': drawn, 'data-name': l.name });
    root.appendChild(path);
    if (drawn === 1) {
      // A single point has no segment to show; mark it.
      root.appendChild(svg('circle', { class: 'dot ' + l.colour, cx: x(times[only]), cy: y(l.values[only]), r: 2.5 }));
    }
  }

  // Crosshair and readout.
  const cross = svg('line', { class: 'cross hidden', y1: M.top, y2: M.top + ph, x1: 0, x2: 0 });
  root.appendChild(cross);
  const readout = document.createElement('div');
  readout.className = 'readout';
  readout.textContent = '\u00a0';
  root.addEventListener('mousemove', (ev) => {
    const ctm = root.getScreenCTM();
    if (!ctm) return;
    const px = (ev.clientX - ctm.e) / ctm.a;
    let best = 0;
    for (let i = 1; i < n; i++) if (Math.abs(x(times[i]) - px) < Math.abs(x(times[best]) - px)) best = i;
    const xx = x(times[best]).toFixed(1);
    cross.setAttribute('x1', xx);
    cross.setAttribute('x2', xx);
    cross.classList.remove('hidden');
    const parts = [clock(new Date(times[best] * 1000))];
    for (const l of lines) {
      const v = l.values[best];
      parts.push(l.name + ' ' + (Number.isFinite(v) ? spec.format(v) : '–'));
    }
    readout.textContent = parts.join(' · ');
  });
  root.addEventListener('mouseleave', () => {
    cross.classList.add('hidden');
    readout.textContent = '\u00a0';
  });

  // Legend: each line with its latest value.
  const legend = document.createElement('div');
  legend.className = 'legend';
  for (const l of lines) {
    const key = document.createElement('span');
    key.className = 'key';
    const sw = document.createElement('span');
    sw.className = 'swatch ' + l.colour;
    const name = document.createElement('span');
    name.textContent = l.name;
    const last = document.createElement('span');
    last.className = 'last';
    const v = l.values[n - 1];
    last.textContent = Number.isFinite(v) ? spec.format(v) : '–';
    key.append(sw, name, last);
    legend.appendChild(key);
  }
  box.replaceChildren(root, legend, readout);
}
