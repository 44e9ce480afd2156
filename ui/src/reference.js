// The API reference: the server's own OpenAPI document (/api/v1/openapi.json, generated from
// the handlers) rendered in the page, offline: every operation by area, its parameters, its
// body's fields, its answers and errors. No key is needed to read it.

import { h, clear, errorBox } from './dom.js';

const METHODS = ['get', 'put', 'post', 'patch', 'delete'];

function ref(schema) {
  return schema && schema.$ref ? schema.$ref.split('/').pop() : null;
}

function typeOf(s) {
  if (!s) return '';
  const r = ref(s);
  if (r) return h('a', { href: `#schema-${r}` }, r);
  if (s.oneOf) return s.oneOf.map(typeOf).reduce((a, b) => [a, ' | ', b]);
  if (s.allOf) return s.allOf.map(typeOf).reduce((a, b) => [a, ' & ', b]);
  const t = Array.isArray(s.type) ? s.type.filter(x => x !== 'null').join(' | ') + (s.type.includes('null') ? ' | null' : '') : s.type;
  if (t === 'array' || (Array.isArray(s.type) && s.type.includes('array'))) return ['array of ', typeOf(s.items)];
  if (s.enum) return `${t}: ${s.enum.map(v => JSON.stringify(v)).join(', ')}`;
  if (s.additionalProperties && typeof s.additionalProperties === 'object') return ['map of ', typeOf(s.additionalProperties)];
  return t || 'any';
}

function fields(schema) {
  const props = Object.entries(schema.properties || {});
  if (!props.length) return null;
  const required = new Set(schema.required || []);
  return h('table', h('thead', h('tr', h('th', 'field'), h('th', 'type'), h('th', 'description'))),
    h('tbody', props.map(([name, p]) => h('tr',
      h('td', h('code', name), required.has(name) ? ' (required)' : ''),
      h('td', typeOf(p)),
      h('td', p.description || '')))));
}

function operation(path, method, op) {
  const params = op.parameters || [];
  const body = op.requestBody && op.requestBody.content;
  const bodySchema = body && Object.values(body)[0] && Object.values(body)[0].schema;
  const id = `${method}-${path}`.replace(/[^a-z0-9]+/gi, '-');
  return h('section.card', { id, 'aria-labelledby': `${id}-h` },
    h('h3', { id: `${id}-h` }, h('code', `${method.toUpperCase()} ${path}`)),
    op.summary ? h('p', op.summary) : null,
    op.description && op.description !== op.summary ? h('p', op.description) : null,
    params.length ? h('div', h('h4', 'Parameters'), h('table',
      h('thead', h('tr', h('th', 'name'), h('th', 'in'), h('th', 'type'), h('th', 'description'))),
      h('tbody', params.map(p => h('tr', h('td', h('code', p.name), p.required ? ' (required)' : ''), h('td', p.in), h('td', typeOf(p.schema)), h('td', p.description || '')))))) : null,
    bodySchema ? h('div', h('h4', 'Body ', typeOf(bodySchema), ` (${Object.keys(body)[0]})`)) : null,
    h('h4', 'Answers'),
    h('ul', Object.entries(op.responses || {}).map(([status, r]) => {
      const c = r.content && Object.values(r.content)[0];
      return h('li', h('strong', status), ' ', r.description || '', c && c.schema ? [' — ', typeOf(c.schema)] : '');
    })));
}

async function main() {
  const el = document.getElementById('main');
  let doc;
  try {
    const res = await fetch('/api/v1/openapi.json');
    if (!res.ok) throw new Error(`the server answered ${res.status}`);
    doc = await res.json();
  } catch (e) {
    clear(el, errorBox(e));
    return;
  }
  const byTag = new Map();
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      const tag = (op.tags && op.tags[0]) || 'other';
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push([path, method, op]);
    }
  }
  const tags = [...byTag.keys()].sort();
  const schemas = Object.entries((doc.components && doc.components.schemas) || {}).sort(([a], [b]) => a.localeCompare(b));
  clear(el,
    h('h1', `${doc.info.title} ${doc.info.version}`),
    doc.info.description ? h('p', doc.info.description) : null,
    h('p', 'Authenticate with ', h('code', 'Authorization: Bearer plk_...'), '. Errors are ', h('code', '{"error": {"code", "message", "field"}}'), ' (docs/errors.md). The machine-readable document: ', h('a', { href: '/api/v1/openapi.json' }, '/api/v1/openapi.json'), '.'),
    h('nav', { 'aria-label': 'Areas' }, h('ul', tags.map(t => h('li', h('a', { href: `#tag-${t}` }, `${t} (${byTag.get(t).length})`))))),
    tags.map(t => h('section', { 'aria-labelledby': `tag-${t}` },
      h('h2', { id: `tag-${t}` }, t),
      byTag.get(t).map(([p, m, op]) => operation(p, m, op)))),
    h('h2#schemas', 'Schemas'),
    schemas.map(([name, s]) => h('section', { id: `schema-${name}`, 'aria-label': name },
      h('h3', h('code', name)),
      s.description ? h('p', s.description) : null,
      fields(s) || h('p', typeOf(s)))));
  document.body.dataset.ready = 'reference';
  if (location.hash) document.getElementById(decodeURIComponent(location.hash.slice(1)))?.scrollIntoView();
}

main();
