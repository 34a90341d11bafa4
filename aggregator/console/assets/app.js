// Outpost's status page: polls api/console every 5 s and renders the
// snapshot. Everything the server sends may carry attacker-controlled text
// (hostnames, rule keys, dead-lettered input), so it is only ever set with
// textContent or as an attribute value, never parsed as HTML.
//
// document.body.dataset.state says where the page is: "loading", "ok",
// "unauthorised" or "error"; dataset.renders counts the snapshots rendered.

import * as fmt from './format.js';
import { draw } from './chart.js';
import { el, cell, badge, arr, num } from './dom.js';
import { showAlert, closeAlert, selectedAlert } from './detail.js';

const REFRESH_MS = 5000;

let snapshot = null;
let lastOK = null; // Date of the last snapshot received
let renders = 0;

const $ = (sel) => document.querySelector(sel);

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

// --- fetching ----------------------------------------------------------

function setState(state, message) {
  document.body.dataset.state = state;
  const notice = $('#notice');
  if (!message) {
    notice.classList.add('hidden');
    notice.textContent = '';
    return;
  }
  notice.textContent = message;
  notice.className = 'notice ' + state;
}

async function refresh() {
  let resp;
  try {
    resp = await fetch('api/console', {
      credentials: 'same-origin',
      cache: 'no-store',
      headers: { Accept: 'application/json' },
    });
  } catch (e) {
    fail('Cannot reach Outpost (' + e.message + '); retrying every 5 s.');
    return;
  }
  if (resp.status === 401 || resp.status === 403) {
    setState('unauthorised', 'Not authorised: this browser has no session with Outpost. ' +
      'Sign in through the link your administrator gave you (or use a client certificate), then reload.');
    return;
  }
  if (!resp.ok) {
    fail('Outpost answered ' + resp.status + ' ' + resp.statusText + '; retrying every 5 s.');
    return;
  }
  let snap;
  try {
    snap = await resp.json();
  } catch (e) {
    fail('Outpost sent a status that is not JSON (' + e.message + ').');
    return;
  }
  snapshot = snap;
  lastOK = new Date();
  render(snap);
  renders++;
  document.body.dataset.renders = String(renders);
  setState('ok');
}

function fail(message) {
  const age = lastOK ? ' Showing the status of ' + fmt.ago(lastOK, new Date()) + '.' : '';
  setState('error', message + age);
}

async function loop() {
  try {
    await refresh();
  } finally {
    setTimeout(loop, REFRESH_MS);
  }
}

// --- rendering ---------------------------------------------------------

function render(s) {
  const now = fmt.parseTime(s.now) || new Date();
  renderHeader(s, now);
  renderTop(s.top || {});
  renderCharts(s.series || {});
  renderSources(arr(s.sources), now, s.stale_after_seconds);
  renderRules(s.rules || {}, now);
  renderAlerts(arr(s.alerts), now);
  renderDestinations(arr(s.destinations));
  renderDeadLetters(s.dead_letters || {}, now);
  renderPipeline(s.pipeline || {}, now);
}

function renderHeader(s, now) {
  $('#version').textContent = s.version ? 'version ' + s.version : '';
  const started = fmt.parseTime(s.started);
  $('#uptime').textContent = started ? 'up ' + fmt.duration((now - started) / 1000) : '';
  $('#updated').textContent = 'as of ' + fmt.stamp(now);
}

function tile(key, value, level, title, suffix) {
  const t = document.querySelector(`.tile[data-key="${key}"]`);
  const v = t.querySelector('.value');
  v.textContent = value;
  if (suffix) v.append(el('span', 'suffix', suffix));
  t.classList.remove('ok', 'warn', 'bad');
  if (level) t.classList.add(level);
  t.title = title || '';
  return t;
}

function renderTop(top) {
  const problems = arr(top.problems);
  const t = tile('ready', top.ready ? 'ready' : 'not ready', top.ready && problems.length === 0 ? 'ok' : top.ready ? 'warn' : 'bad');
  t.querySelector('.problems').replaceChildren(...problems.map((p) => el('li', null, p)));
  tile('events_in', fmt.compact(num(top.events_in)), null, fmt.int(num(top.events_in)) + ' events since start');
  tile('bytes_in', fmt.bytes(num(top.bytes_in)));
  tile('alerts_out', fmt.compact(num(top.alerts_out)), null, fmt.int(num(top.alerts_out)) + ' alerts sent');
  tile('bytes_out', fmt.bytes(num(top.bytes_out)));
  const ratio = num(top.reduction_ratio);
  const times = ratio >= 100 ? fmt.int(ratio) : ratio.toFixed(1).replace(/\.0$/, '');
  tile('reduction_ratio', ratio > 0 ? times + '×' : 'nothing sent yet', ratio > 0 ? 'ok' : null,
    'bytes received per byte sent to the SIEM since start', ratio > 0 ? ' fewer bytes' : '');
  const stale = num(top.stale_sources);
  tile('stale_sources', fmt.int(stale), stale > 0 ? 'warn' : 'ok');
  const backlog = num(top.backlog_alerts);
  tile('backlog_alerts', fmt.int(backlog) + ' alerts', backlog > 0 ? 'warn' : 'ok', 'alerts waiting for a destination');
  const dead = num(top.dead_letters);
  tile('dead_letters', fmt.int(dead), dead > 0 ? 'warn' : 'ok', 'dead letters since start');
}

function renderCharts(series) {
  const times = arr(series.times);
  const ev = series.events_in && typeof series.events_in === 'object' ? series.events_in : {};
  draw($('#chart-events'), {
    series: 'events_in',
    label: 'events in per second by source and transport',
    times,
    lines: Object.keys(ev).sort().map((k) => ({ name: k, values: arr(ev[k]) })),
    format: (v) => fmt.rate(v),
  });
  const by = series.bytes_in_by && typeof series.bytes_in_by === 'object' ? series.bytes_in_by : {};
  draw($('#chart-bytes'), {
    series: 'bytes_in_by',
    label: 'bytes in per second by source and transport',
    times,
    base: 1024,
    lines: Object.keys(by).sort().map((k) => ({ name: k, values: arr(by[k]) })),
    format: (v) => fmt.byteRate(v),
  });
  draw($('#chart-link'), {
    series: 'link',
    label: 'bytes in and bytes out per second',
    times,
    base: 1024,
    lines: [
      { name: 'in', values: arr(series.bytes_in) },
      { name: 'out', values: arr(series.bytes_out) },
    ],
    format: (v) => fmt.byteRate(v),
  });
  draw($('#chart-ratio'), {
    series: 'ratio',
    label: 'bytes in per byte out',
    times,
    lines: [{ name: 'in per out', values: arr(series.ratio), gapsAtZero: true }],
    format: (v) => fmt.compact(v) + '×',
  });
  draw($('#chart-alerts'), {
    series: 'alerts',
    label: 'alerts raised per second',
    times,
    lines: [{ name: 'alerts', values: arr(series.alerts) }],
    format: (v) => fmt.rate(v),
  });
}

function renderSources(sources, now, staleAfter) {
  $('#stale-after').textContent = staleAfter > 0 ? 'stale after ' + fmt.duration(staleAfter) : '';
  const rows = sources.slice().sort((a, b) =>
    (b.stale === true) - (a.stale === true) ||
    String(a.source).localeCompare(String(b.source)) ||
    String(a.host).localeCompare(String(b.host)));
  fill($('#sources tbody'), rows.map((s) => {
    const tr = el('tr', s.stale ? 'stale' : null);
    const host = cell(s.host || '–');
    if (s.stale) host.append(' ', badge('stale', 'stale'));
    const last = fmt.parseTime(s.last_event);
    tr.append(cell(s.source), host, cell(fmt.ago(last, now), 'age', last ? fmt.stamp(last) : ''), cell(fmt.int(num(s.events)), 'num'));
    return tr;
  }));
  if (rows.length === 0) fill($('#sources tbody'), [emptyRow(4, 'No source has received anything yet.')]);
}

function emptyRow(cols, text) {
  const tr = el('tr', 'empty');
  const td = cell(text, 'muted');
  td.colSpan = cols;
  tr.appendChild(td);
  return tr;
}

function renderRules(rules, now) {
  const summary = $('#rules-summary');
  const parts = [el('span', null, fmt.int(num(rules.loaded)) + ' rules loaded')];
  const reload = fmt.parseTime(rules.last_reload);
  if (reload) {
    const when = el('span', null, ' · last reload ' + fmt.ago(reload, now) + ' ');
    when.title = fmt.stamp(reload);
    parts.push(when);
    const ok = rules.last_result === 'ok';
    parts.push(badge(rules.last_result || 'unknown', ok ? 'ok' : 'bad'));
    if (!ok) parts.push(el('span', 'muted', ' (the running set stayed)'));
  } else {
    parts.push(el('span', 'muted', ' · not reloaded since start'));
  }
  summary.replaceChildren(...parts);

  const errors = arr(rules.last_errors);
  const list = $('#rule-errors');
  list.replaceChildren(...errors.map((e) => el('li', null, e)));
  list.classList.toggle('hidden', errors.length === 0);

  const per = arr(rules.per_rule).slice().sort((a, b) =>
    num(b.alerts) - num(a.alerts) || num(b.matches) - num(a.matches) || String(a.id).localeCompare(String(b.id)));
  fill($('#rules tbody'), per.map((r) => {
    const tr = el('tr');
    tr.dataset.rule = r.id;
    tr.append(cell(r.id, 'mono'), cell(r.title), cell(r.kind), sevCell(r.severity),
      cell(fmt.int(num(r.matches)), 'num'), cell(fmt.int(num(r.alerts)), 'num'));
    return tr;
  }));
}

function sevCell(s) {
  const td = el('td', 'num');
  td.appendChild(badge(String(num(s)), 'sev sev-' + fmt.severityBand(num(s))));
  td.title = fmt.severityBand(num(s));
  return td;
}

// --- alerts ------------------------------------------------------------

function renderAlerts(alerts, now) {
  // The rule filter lists the rules of the alerts shown; it is rebuilt only
  // when that set changes, so an open select is not disturbed.
  const select = $('#filter-rule');
  const rules = [...new Set(alerts.map((a) => String(a.rule)))].sort();
  const current = select.value;
  if (current && !rules.includes(current)) rules.push(current);
  const have = [...select.options].slice(1).map((o) => o.value);
  if (have.join('\n') !== rules.join('\n')) {
    const opts = rules.map((r) => {
      const o = el('option', null, r);
      o.value = r;
      return o;
    });
    const all = el('option', null, 'all rules');
    all.value = '';
    select.replaceChildren(all, ...opts);
    select.value = current;
  }

  const rule = select.value;
  const minSev = Number($('#filter-severity').value) || 0;
  const shown = alerts.filter((a) => (!rule || a.rule === rule) && num(a.severity) >= minSev);
  const selected = selectedAlert();
  fill($('#alerts tbody'), shown.map((a) => {
    const tr = el('tr', 'alert');
    tr.dataset.id = a.id;
    tr.dataset.rule = a.rule;
    tr.dataset.severity = String(num(a.severity));
    tr.tabIndex = 0;
    if (a.id === selected) tr.classList.add('selected');
    const t = fmt.parseTime(a.time);
    tr.append(cell(fmt.when(t, now), 'time', t ? fmt.stamp(t) : ''), sevCell(a.severity), cell(a.rule, 'mono'),
      cell(a.title), cell(a.key || '', 'mono key'), cell(fmt.int(num(a.count)), 'num'));
    return tr;
  }));
  $('#alerts-shown').textContent = shown.length === alerts.length
    ? alerts.length + ' shown'
    : shown.length + ' of ' + alerts.length + ' shown';
  $('#alerts-empty').classList.toggle('hidden', shown.length > 0);
  $('#alerts-empty').textContent = alerts.length === 0 ? 'No alerts yet.' : 'No alert matches the filters.';
}

function openRow(tr) {
  if (!tr || !tr.dataset.id) return;
  for (const r of document.querySelectorAll('#alerts tr.alert.selected')) r.classList.remove('selected');
  tr.classList.add('selected');
  showAlert(tr.dataset.id, snapshot ? fmt.parseTime(snapshot.now) : null);
}

// --- forwarding, dead letters, pipeline --------------------------------

function renderDestinations(dests) {
  fill($('#destinations tbody'), dests.map((d) => {
    const backlog = num(d.backlog_alerts);
    // Not connected with nothing waiting is an idle link (the forwarder
    // closes it after a quiet moment), not a failure.
    const idle = !d.connected && backlog === 0;
    const tr = el('tr', d.connected || idle ? null : 'down');
    const state = el('td');
    state.appendChild(d.connected ? badge('connected', 'ok') : idle ? badge('idle', 'ok') : badge('disconnected', 'bad'));
    tr.append(cell(d.name), cell(d.address, 'mono'), cell(d.transport), state,
      cell(fmt.int(num(d.alerts_out)), 'num'), cell(fmt.bytes(num(d.bytes_out)), 'num'),
      cell(fmt.int(backlog), backlog > 0 ? 'num warn' : 'num'),
      cell(backlog > 0 ? fmt.duration(num(d.oldest_backlog_seconds)) : '–', 'num'),
      cell(fmt.int(num(d.failover_alerts)), 'num'),
      cell(fmt.int(num(d.errors)), num(d.errors) > 0 ? 'num warn' : 'num'));
    return tr;
  }));
  if (dests.length === 0) fill($('#destinations tbody'), [emptyRow(10, 'No destination configured.')]);
}

function renderDeadLetters(dl, now) {
  const counts = arr(dl.counts).slice().sort((a, b) => num(b.count) - num(a.count));
  fill($('#dead-counts tbody'), counts.map((c) => {
    const tr = el('tr');
    tr.append(cell(c.stage), cell(c.reason), cell(fmt.int(num(c.count)), 'num'));
    return tr;
  }));
  if (counts.length === 0) fill($('#dead-counts tbody'), [emptyRow(3, 'None.')]);

  $('#dead-latest').replaceChildren(...arr(dl.latest).map((d) => {
    const li = el('li', 'sample');
    const head = el('div', 'sample-head');
    const t = fmt.parseTime(d.time);
    const time = el('span', 'time', fmt.when(t, now));
    if (t) time.title = fmt.stamp(t);
    head.append(time, ' ', badge(d.stage, 'plain'), ' ', el('span', 'reason', d.reason));
    if (d.sender) head.append(' ', el('span', 'muted', 'from '), el('span', 'mono', d.sender));
    li.append(head, el('pre', 'sample-text', d.sample));
    return li;
  }));
}

function bar(use) {
  const u = Math.min(1, Math.max(0, num(use)));
  const s = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  s.setAttribute('class', 'bar' + (u >= 0.95 ? ' bad' : u >= 0.8 ? ' warn' : ''));
  s.setAttribute('viewBox', '0 0 100 8');
  s.setAttribute('preserveAspectRatio', 'none');
  s.dataset.use = String(u);
  const bg = document.createElementNS(s.namespaceURI, 'rect');
  bg.setAttribute('class', 'bar-bg');
  bg.setAttribute('width', '100');
  bg.setAttribute('height', '8');
  const fg = document.createElementNS(s.namespaceURI, 'rect');
  fg.setAttribute('class', 'bar-fg');
  fg.setAttribute('width', String(u * 100));
  fg.setAttribute('height', '8');
  s.append(bg, fg);
  return s;
}

function barCell(use, text) {
  const td = el('td', 'usage');
  td.append(bar(use), el('span', 'pct', text));
  return td;
}

function renderPipeline(p, now) {
  fill($('#stages tbody'), arr(p.stages).map((st) => {
    const tr = el('tr');
    const wm = fmt.parseTime(st.watermark);
    const wmCell = cell(wm ? fmt.clock(wm) + ' (' + fmt.duration((now - wm) / 1000) + ' behind)' : '–', null, wm ? fmt.stamp(wm) : '');
    tr.append(cell(st.name), cell(fmt.rate(num(st.rate)), 'num'), cell(fmt.int(num(st.lag)), num(st.lag) > 0 ? 'num warn' : 'num'), wmCell);
    return tr;
  }));
  fill($('#streams tbody'), arr(p.streams).map((st) => {
    const tr = el('tr');
    const limit = num(st.max_bytes) > 0 ? ' of ' + fmt.bytes(num(st.max_bytes)) : ' (no limit)';
    tr.append(cell(st.name, 'mono'), cell(fmt.int(num(st.msgs)), 'num'), cell(fmt.bytes(num(st.bytes)), 'num'),
      barCell(st.use, fmt.percent(num(st.use)) + limit));
    return tr;
  }));

  const facts = [
    ['Badger on disk', fmt.bytes(num(p.badger_bytes))],
    ['Live window keys', fmt.int(num(p.live_keys))],
    ['Go heap', fmt.bytes(num(p.heap_bytes))],
    ['RSS', fmt.bytes(num(p.rss_bytes))],
    ['Memory limit', num(p.memory_limit_bytes) > 0 ? fmt.bytes(num(p.memory_limit_bytes)) : 'none'],
  ];
  const dl = $('#store');
  const items = [];
  for (const [k, v] of facts) items.push(el('dt', null, k), el('dd', null, v));
  if (num(p.memory_limit_bytes) > 0) {
    const use = num(p.rss_bytes) / num(p.memory_limit_bytes);
    const dd = el('dd', 'usage');
    dd.append(bar(use), el('span', 'pct', fmt.percent(use) + ' of the limit'));
    items.push(el('dt', null, 'RSS / limit'), dd);
  }
  dl.replaceChildren(...items);
}

// --- wiring ------------------------------------------------------------

function start() {
  document.body.dataset.state = 'loading';
  const tbody = $('#alerts tbody');
  tbody.addEventListener('click', (ev) => openRow(ev.target.closest('tr.alert')));
  tbody.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' || ev.key === ' ') {
      ev.preventDefault();
      openRow(ev.target.closest('tr.alert'));
    }
  });
  // Charts are drawn at their box's width: redraw when it changes.
  let resizing = 0;
  window.addEventListener('resize', () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => {
      if (snapshot) renderCharts(snapshot.series || {});
    }, 150);
  });
  for (const id of ['#filter-rule', '#filter-severity']) {
    $(id).addEventListener('change', () => {
      if (snapshot) renderAlerts(arr(snapshot.alerts), fmt.parseTime(snapshot.now) || new Date());
    });
  }
  $('#detail-close').addEventListener('click', () => {
    closeAlert();
    for (const r of document.querySelectorAll('#alerts tr.alert.selected')) r.classList.remove('selected');
  });
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape') $('#detail-close').click();
  });
  loop();
}

start();
