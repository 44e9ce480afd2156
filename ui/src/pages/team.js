// Team home: models, deployments with a health badge (latency, errors, drift, live accuracy),
// open incidents and this month's cost.

import { h, table, link, badge, later, clear, errorBox, num, pct, usd, ms, when, words, card } from '../dom.js';
import { api, all, enc } from '../api.js';

export const deploymentName = d => `${d.team}/${d.model}@${d.environment}`;
export const deploymentHref = d => `#/teams/${enc(d.team)}/deployments/${enc(d.model)}/${enc(d.environment)}`;

// The last hour's health of a deployment as badges; firing alerts name drift and accuracy.
export async function healthBadges(d, alerts) {
  const base = `/deployments/${enc(d.team)}/${enc(d.model)}/${enc(d.environment)}`;
  const until = new Date();
  const since = new Date(until - 3600e3);
  const out = [];
  try {
    const hs = await api(`${base}/health?since=${since.toISOString()}&until=${until.toISOString()}&step_seconds=3600`);
    const t = hs.total;
    if (!t.requests) out.push(badge('no traffic in the last hour', 'none'));
    else {
      const p99 = t.latency_ms.p99;
      out.push(badge(`p99 ${ms(p99)}`, p99 > 1000 ? 'bad' : p99 > 500 ? 'warn' : 'ok', 'latency, last hour'));
      out.push(badge(`errors ${pct(t.error_rate, 1)}`, t.error_rate > 0.05 ? 'bad' : t.error_rate > 0.001 ? 'warn' : 'ok', 'error rate, last hour'));
    }
  } catch (e) { out.push(badge('health unavailable', 'none', e.message)); }
  const mine = alerts.filter(a => a.deployment === deploymentName(d) && a.state === 'firing');
  const drift = mine.filter(a => /drift/.test(a.rule + a.summary));
  out.push(drift.length ? badge(`drift: ${drift.length} firing`, 'bad', drift.map(a => a.summary).join('\n')) : badge('no drift alert', 'ok'));
  try {
    const p = await api(`${base}/performance`);
    const v = p.versions.find(v => v.labelled > 0);
    if (v) {
      const metric = 'accuracy' in v.metrics ? 'accuracy' : 'r2' in v.metrics ? 'r2' : Object.keys(v.metrics)[0];
      const delta = v.baseline && v.baseline.delta ? v.baseline.delta[metric] : null;
      const tone = delta !== null && delta !== undefined && delta < -0.02 ? 'bad' : 'ok';
      out.push(badge(`live ${words(metric)} ${num(v.metrics[metric], 3)}`, tone, `label coverage ${pct(v.label_coverage, 1)}`));
    } else out.push(badge('no labels yet', 'none'));
  } catch (e) { out.push(badge('live accuracy unavailable', 'none', e.message)); }
  for (const a of mine.filter(a => !drift.includes(a))) out.push(badge(`${a.rule} firing`, a.severity === 'critical' ? 'bad' : 'warn', a.summary));
  return out;
}

export async function render([team], session) {
  const t = await api(`/teams/${enc(team)}`);
  const [deployments, alerts, incidents] = await Promise.all([
    all(`/deployments?team=${enc(team)}`),
    api(`/teams/${enc(team)}/alerts`),
    api(`/teams/${enc(team)}/incidents`),
  ]);
  const open = incidents.filter(i => i.state !== 'resolved');

  const models = h('div');
  const filter = h('input#model-filter', { type: 'search', placeholder: 'name contains…' });
  let cursor = null;
  let asked = 0;
  const modelRows = h('tbody');
  const modelStatus = h('div', { 'aria-live': 'polite' });
  const more = h('button.secondary', { type: 'button', on: { click: () => loadModels(false) } }, 'More models');
  // One list at a time: a newer filter's answer wins, an older one is dropped.
  async function loadModels(reset) {
    const mine = ++asked;
    more.disabled = true;
    const q = filter.value.trim();
    let page;
    try {
      page = await api(`/teams/${enc(team)}/models?limit=50${q ? `&q=${enc(q)}` : ''}${!reset && cursor ? `&cursor=${enc(cursor)}` : ''}`);
    } catch (e) {
      if (mine === asked) { clear(modelStatus, errorBox(e)); more.disabled = false; }
      return;
    }
    if (mine !== asked) return;
    clear(modelStatus);
    if (reset) modelRows.replaceChildren();
    for (const m of page.items) {
      const live = deployments.filter(d => d.model === m.name).map(d => h('a', { href: deploymentHref(d) }, d.environment));
      modelRows.append(h('tr',
        h('td', link(`#/teams/${enc(team)}/models/${enc(m.name)}`, m.name)),
        h('td', words(m.task)), h('td.num', m.latest_version || '–'),
        h('td', live.length ? live.flatMap((a, i) => (i ? [', ', a] : [a])) : h('span.muted', 'not deployed')),
        h('td', when(m.updated_at))));
    }
    cursor = page.next_cursor;
    more.hidden = !cursor;
    more.disabled = false;
    if (!modelRows.children.length) modelRows.append(h('tr', h('td', { colSpan: 5 }, 'No models match.')));
  }
  filter.addEventListener('input', () => { clearTimeout(filter.t); filter.t = setTimeout(() => loadModels(true), 200); });
  await loadModels(true);
  models.append(
    h('.row', h('label', { for: 'model-filter' }, 'Filter models'), filter),
    h('table', h('caption.sr', 'Models'), h('thead', h('tr', ['Model', 'Task', 'Latest version', 'Deployed to', 'Updated'].map(x => h('th', { scope: 'col' }, x)))), modelRows),
    more, modelStatus);

  const deploymentRows = deployments.map(d => {
    const health = h('span', h('span.muted.loading', 'checking…'));
    healthBadges(d, alerts).then(b => clear(health, b), () => clear(health, badge('unavailable', 'none')));
    return { d, health };
  });

  return h('section',
    h('p.crumbs', link('#/', 'Teams'), ' / ', team),
    h('h1', t.display_name || t.name),
    t.description ? h('p', t.description) : null,
    h('p.muted', `Your role: ${session.role(team) || 'none'}`),
    h('.cards',
      card('Firing alerts', num(alerts.filter(a => a.state === 'firing').length)),
      card('Deployments', num(deployments.length)),
      card('Open incidents', num(open.length), open.length ? 'needs attention' : 'all quiet'),
      h('div', later(async () => {
        const b = await api(`/teams/${enc(team)}/billing`);
        return card(`Cost this month (${b.month})`, usd(b.cost_this_month_usd), [`${num(b.predictions_this_month)} predictions · plan ${b.plan} · `, link(`#/teams/${enc(team)}/cost`, 'details')]);
      }))),
    h('h2', 'Deployments'),
    table([
      { label: 'Deployment', get: r => link(deploymentHref(r.d), `${r.d.model} @ ${r.d.environment}`) },
      { label: 'Traffic', get: r => r.d.spec.versions.map(v => `v${v.version} ${v.weight}%`).join(', ') + (r.d.spec.shadows.length ? ` · shadow ${r.d.spec.shadows.map(s => `v${s}`).join(', ')}` : '') },
      { label: 'Health', get: r => r.health },
      { label: 'Changed', get: r => when(r.d.updated_at) },
    ], deploymentRows, { caption: 'Deployments', empty: 'Nothing deployed yet: `plinth deploy` or a promotion puts a version in an environment.' }),
    h('h2', 'Open incidents'),
    table([
      { label: 'Incident', get: i => i.title },
      { label: 'Deployment', get: i => i.deployment },
      { label: 'State', get: i => badge(words(i.state), i.state === 'open' ? 'bad' : 'warn') },
      { label: 'Opened', get: i => when(i.opened_at) },
    ], open, { caption: 'Open incidents', empty: 'No open incidents.' }),
    h('h2', 'Models'),
    models);
}
