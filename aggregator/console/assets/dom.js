// DOM helpers that only ever set text: what the server sends is never
// parsed as HTML.

export function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

export function cell(text, cls, title) {
  const td = el('td', cls, text);
  if (title) td.title = title;
  return td;
}

export function badge(text, cls) {
  return el('span', 'badge ' + cls, text);
}

export const arr = (v) => (Array.isArray(v) ? v : []);
export const num = (v) => (Number.isFinite(v) ? v : 0);
