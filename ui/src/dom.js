// DOM building and formatting: one small helper instead of a framework.

// h('tag.class#id', {attrs, on: {click}}, ...children). Children: nodes, strings, arrays, null.
export function h(spec, attrs, ...children) {
  if (attrs instanceof Node || typeof attrs !== 'object' || attrs === null || Array.isArray(attrs)) {
    children.unshift(attrs);
    attrs = {};
  }
  const [, tag = 'div', rest = ''] = spec.match(/^([a-z0-9]*)(.*)$/i);
  const el = document.createElement(tag || 'div');
  for (const part of rest.match(/[.#][^.#]+/g) || []) {
    if (part[0] === '.') el.classList.add(part.slice(1)); else el.id = part.slice(1);
  }
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'on') for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
    else if (k === 'style') Object.assign(el.style, v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

export function clear(el, ...children) { el.replaceChildren(); append(el, children); return el; }

// A table: columns [{label, get(row) → node|string, num}], rows.
export function table(columns, rows, { caption, empty = 'None.' } = {}) {
  if (!rows.length) return h('p.muted', empty);
  return h('table', caption ? h('caption.sr', caption) : null,
    h('thead', h('tr', columns.map(c => h(c.num ? 'th.num' : 'th', { scope: 'col' }, c.label)))),
    h('tbody', rows.map(r => h('tr', columns.map(c => h(c.num ? 'td.num' : 'td', c.get(r)))))));
}

export function card(label, value, sub) {
  return h('.card', h('.label', label), h('.value', value), sub ? h('.sub', sub) : null);
}

export function badge(text, tone = 'none', title) {
  return h(`span.badge.${tone}`, { title }, text);
}

export function errorBox(e) {
  const field = e && e.field ? ` (field: ${e.field})` : '';
  return h('p.error', { role: 'alert' }, `${e && e.message ? e.message : e}${field}`);
}

// A section filled by an async loader; a failed load shows its error in place.
// Placeholders carry the class `loading` until their content is in (the browser tests wait for
// none to be left).
export function later(loader, placeholder = 'Loading…') {
  const el = h('div', h('p.muted.loading', placeholder));
  Promise.resolve().then(loader).then(
    node => clear(el, node),
    e => clear(el, errorBox(e)));
  return el;
}

const whole = new Intl.NumberFormat('en-US');
const significant = new Intl.NumberFormat('en-US', { maximumSignificantDigits: 3 });
// A number for people: whole numbers grouped, others to 3 significant digits, or to `digits`
// decimals when given.
export function num(x, digits) {
  if (x === null || x === undefined || Number.isNaN(x)) return '–';
  if (digits !== undefined) return x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
  return Math.abs(x) >= 1000 || Number.isInteger(x) ? whole.format(Math.round(x)) : significant.format(x);
}
export function pct(x, digits = 2) {
  return x === null || x === undefined || Number.isNaN(x) ? '–' : `${(x * 100).toFixed(digits)} %`;
}
export function usd(x) {
  if (x === null || x === undefined) return '–';
  return x !== 0 && Math.abs(x) < 0.01 ? `$${x.toPrecision(2)}` : `$${x.toFixed(2)}`;
}
export function ms(x) { return x === null || x === undefined ? '–' : `${x < 10 ? x.toFixed(2) : x.toFixed(0)} ms`; }
export function bytes(n) {
  if (n === null || n === undefined) return '–';
  const u = ['B', 'KB', 'MB', 'GB', 'TB']; let i = 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return `${i ? n.toFixed(1) : n} ${u[i]}`;
}
export function when(t) {
  if (!t) return document.createTextNode('–');
  const d = new Date(t);
  return h('time', { datetime: t, title: t }, d.toLocaleString('en-GB', { dateStyle: 'medium', timeStyle: 'short' }));
}
export function words(s) { return s ? String(s).replaceAll('_', ' ') : '–'; }

export function link(href, text) { return h('a', { href }, text); }
