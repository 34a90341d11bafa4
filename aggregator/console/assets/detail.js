// The alert detail panel: GET alerts/{id} and show why the alert was raised
// (the rule, the window, the evidence event ids, the values and steps, the
// fields carried). Text only, as everywhere on the page.
//
// #alert-detail's dataset: id (the alert shown or loading) and state
// ("loading", "loaded", "error" or "closed").

import * as fmt from './format.js';
import { el, badge, arr, num } from './dom.js';

let current = null;
let seq = 0; // a newer click wins over an answer still on its way

const panel = () => document.getElementById('alert-detail');

export function selectedAlert() {
  return current;
}

export function closeAlert() {
  current = null;
  seq++;
  const p = panel();
  p.classList.add('hidden');
  delete p.dataset.id;
  p.dataset.state = 'closed';
  document.body.classList.remove('detail-open');
}

export async function showAlert(id, now) {
  const my = ++seq;
  current = id;
  const p = panel();
  p.dataset.id = id;
  p.dataset.state = 'loading';
  p.classList.remove('hidden');
  document.body.classList.add('detail-open');
  p.querySelector('.detail-title').textContent = 'Alert ' + id;
  const body = p.querySelector('.detail-body');
  body.replaceChildren(el('p', 'muted', 'loading…'));

  const failed = (msg) => {
    if (my !== seq) return;
    p.dataset.state = 'error';
    body.replaceChildren(el('p', 'error', msg));
  };
  let resp;
  try {
    resp = await fetch('alerts/' + encodeURIComponent(id), {
      credentials: 'same-origin',
      cache: 'no-store',
      headers: { Accept: 'application/json' },
    });
  } catch (e) {
    failed('Cannot reach Outpost: ' + e.message);
    return;
  }
  if (resp.status === 401 || resp.status === 403) return failed('Not authorised to read this alert.');
  if (resp.status === 404) return failed('Outpost no longer has this alert.');
  if (!resp.ok) return failed('Outpost answered ' + resp.status + ' ' + resp.statusText + '.');
  let alert;
  try {
    alert = await resp.json();
  } catch (e) {
    failed('The alert is not JSON: ' + e.message);
    return;
  }
  if (my !== seq) return;
  p.querySelector('.detail-title').textContent = alert.title || alert.rule || 'Alert ' + id;
  body.replaceChildren(...explain(alert, now || new Date()));
  p.dataset.state = 'loaded';
}

function explain(a, now) {
  const out = [];
  const sev = num(a.severity);
  const head = el('p', 'detail-sub');
  head.append(badge(sev + ' ' + fmt.severityBand(sev), 'sev sev-' + fmt.severityBand(sev)), ' ',
    el('span', 'mono', a.rule), ' ', el('span', 'muted', a.kind ? '(' + a.kind + ')' : ''));
  out.push(head);
  if (a.description) out.push(el('p', 'description', a.description));

  const first = fmt.parseTime(a.first_seen);
  const last = fmt.parseTime(a.last_seen);
  let span = fmt.stamp(first) + ' – ' + fmt.stamp(last);
  if (first && last) span += ' (' + fmt.duration((last - first) / 1000) + ')';
  const groupBy = Array.isArray(a.group_by) ? a.group_by.join(', ') : a.group_by ? String(a.group_by) : '';
  const facts = [
    ['Alert id', a.id, 'mono'],
    ['Rule', a.rule, 'mono'],
    ['Window', span],
    ['Last event', last ? fmt.ago(last, now) : '–'],
    ['Events', fmt.int(num(a.count))],
  ];
  if (groupBy) facts.push(['Group by', groupBy, 'mono']);
  if (a.key) facts.push(['Key', a.key, 'mono']);
  const dl = el('dl', 'facts');
  for (const [k, v, cls] of facts) dl.append(el('dt', null, k), el('dd', cls, v));
  const tags = arr(a.tags);
  if (tags.length > 0) {
    const dd = el('dd', 'tags');
    for (const t of tags) dd.append(badge(t, 'tag'), ' ');
    dl.append(el('dt', null, 'Tags'), dd);
  }
  out.push(dl);

  out.push(el('h3', null, 'Evidence events'));
  const ids = arr(a.event_ids);
  if (ids.length > 0) {
    const ul = el('ul', 'evidence');
    for (const id of ids) ul.appendChild(el('li', 'mono', id));
    out.push(ul);
    if (num(a.count) > ids.length) out.push(el('p', 'muted', 'the first ' + ids.length + ' of ' + fmt.int(num(a.count)) + ' events'));
  } else {
    out.push(el('p', 'muted', 'no event ids kept'));
  }

  const values = arr(a.values);
  if (values.length > 0) {
    out.push(el('h3', null, 'Values'));
    const ul = el('ul', 'values');
    for (const v of values) ul.appendChild(el('li', 'mono', v));
    out.push(ul);
  }

  const steps = arr(a.steps);
  if (steps.length > 0) {
    out.push(el('h3', null, 'Steps'));
    const table = el('table', 'grid steps');
    const hr = el('tr');
    hr.append(el('th', null, '#'), el('th', null, 'Step'), el('th', null, 'Time'), el('th', null, 'Event'));
    table.appendChild(el('thead')).appendChild(hr);
    const tb = table.appendChild(el('tbody'));
    steps.forEach((s, i) => {
      const tr = el('tr');
      const t = fmt.parseTime(s.time);
      tr.append(el('td', 'num', i + 1), el('td', null, s.name), el('td', 'time', fmt.stamp(t)), el('td', 'mono', s.event_id));
      tb.appendChild(tr);
    });
    out.push(table);
  }

  for (const [title, obj, cls] of [['Fields', a.fields, 'fields'], ['CEF mapping', a.cef, 'cef']]) {
    if (!obj || typeof obj !== 'object') continue;
    const keys = Object.keys(obj).sort();
    if (keys.length === 0) continue;
    out.push(el('h3', null, title));
    const table = el('table', 'grid kv ' + cls);
    const tb = table.appendChild(el('tbody'));
    for (const k of keys) {
      const tr = el('tr');
      tr.dataset.key = k;
      const v = obj[k];
      tr.append(el('th', 'mono', k), el('td', 'mono', typeof v === 'string' ? v : JSON.stringify(v)));
      tb.appendChild(tr);
    }
    out.push(table);
  }
  return out;
}
