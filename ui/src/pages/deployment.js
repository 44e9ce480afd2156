// Deployment: traffic split with canary controls and rollback (maintainers); latency, errors and
// throughput over time; live accuracy with label coverage; drift per feature with the reference
// and current distributions side by side; alerts and incidents; a sample of the prediction log.

import { h, table, link, badge, later, clear, errorBox, num, pct, ms, when, words, card } from '../dom.js';
import { api, all, enc } from '../api.js';
import { timeChart, barChart } from '../charts.js';
import { refresh } from '../app.js';
import { deploymentName } from './team.js';

const RANGES = [['1h', 3600, 60], ['6h', 6 * 3600, 300], ['24h', 86400, 900], ['7d', 7 * 86400, 3600], ['30d', 30 * 86400, 3 * 3600]];

function traffic(d) {
  return d.spec.versions.map(v => `v${v.version} ${v.weight}%`).join(', ') + (d.spec.shadows.length ? ` · shadow ${d.spec.shadows.map(s => `v${s}`).join(', ')}` : '');
}

// The traffic editor: every version's weight, canary shortcuts, rollback.
function controls(d, versions, base) {
  const status = h('div', { 'aria-live': 'polite' });
  const weights = new Map(d.spec.versions.map(v => [v.version, v.weight]));
  const rows = h('div');
  const draw = () => clear(rows, [...weights.entries()].sort((a, b) => a[0] - b[0]).map(([v, w]) => {
    const input = h('input', { id: `weight-v${v}`, type: 'number', min: '0', max: '100', step: '1', value: String(w), style: { width: '6em' },
      on: { input: ev => weights.set(v, Number(ev.target.value)) } });
    return h('.row', h('label', { for: `weight-v${v}` }, `Weight of v${v} (%)`), input,
      h('button.secondary', { type: 'button', 'aria-label': `Remove v${v} from the split`, on: { click: () => { weights.delete(v); draw(); } } }, 'Remove'));
  }));
  draw();
  const candidates = versions.filter(v => !v.archived_at).map(v => v.version);
  const pick = h('select#add-version', candidates.map(v => h('option', { value: String(v) }, `v${v}`)));
  const apply = async body => {
    clear(status, h('p.muted', 'Applying…'));
    try {
      const after = await api(`${base}/traffic`, { method: 'POST', body });
      refresh(`Now serving ${traffic(after)} (revision ${after.revision}).`);
    } catch (e) { clear(status, errorBox(e)); }
  };
  const current = d.spec.versions;
  const main = current.length ? current.reduce((a, b) => (b.weight > a.weight ? b : a)) : null;
  const canaries = current.filter(v => main && v.version !== main.version);
  // Widening a canary to half takes from the main version only.
  const widened = c => current.map(v => ({ version: v.version, weight: v.version === c.version ? 50 : v.version === main.version ? v.weight - (50 - c.weight) : v.weight }));
  const shortcuts = canaries.map(c => [
    c.weight < 50 && main.weight - (50 - c.weight) >= 0
      ? h('button', { type: 'button', on: { click: () => apply({ versions: widened(c).filter(v => v.weight > 0) }) } }, `Widen v${c.version} to 50 %`)
      : null,
    h('button', { type: 'button', on: { click: () => apply({ versions: [{ version: c.version, weight: 100 }] }) } }, `Send all traffic to v${c.version}`),
  ]);
  // A canary: a version not in the split yet, at a small weight taken from the main version.
  const outside = candidates.filter(v => !current.some(c => c.version === v)).sort((a, b) => b - a);
  const canaryVersion = h('select#canary-version', outside.map(v => h('option', { value: String(v) }, `v${v}`)));
  const canaryWeight = h('input#canary-weight', { type: 'number', min: '1', max: '50', step: '1', value: '10', style: { width: '5em' } });
  const canaryStart = main && outside.length ? h('form.row', { 'aria-label': 'Start a canary', on: { submit: ev => {
    ev.preventDefault();
    // The canary's share comes from the main version; the other versions keep theirs.
    const w = Number(canaryWeight.value);
    if (!(w >= 1 && w < main.weight)) {
      clear(status, errorBox({ message: `The canary's weight must be between 1 and ${main.weight - 1} (v${main.version} gives it up).`, field: 'canary weight' }));
      return;
    }
    apply({ versions: [...current.map(v => ({ version: v.version, weight: v.version === main.version ? v.weight - w : v.weight })), { version: Number(canaryVersion.value), weight: w }] });
  } } },
  h('label', { for: 'canary-version' }, 'Canary version'), canaryVersion,
  h('label', { for: 'canary-weight' }, 'Canary weight (%)'), canaryWeight,
  h('button', { type: 'submit' }, 'Start canary')) : null;
  const rollback = h('div');
  const askRollback = () => clear(rollback,
    h('span', 'Go back to the previous revision of this deployment? '),
    h('button.danger', { type: 'button', on: { click: async () => {
      try {
        const after = await api(`${base}/rollback`, { method: 'POST', body: {} });
        refresh(`Rolled back: now serving ${traffic(after)} (revision ${after.revision}).`);
      } catch (e) { clear(status, errorBox(e)); }
    } } }, 'Confirm rollback'),
    h('button.secondary', { type: 'button', on: { click: () => clear(rollback, rollbackButton()) } }, 'Cancel'));
  const rollbackButton = () => h('button.danger', { type: 'button', on: { click: askRollback } }, 'Roll back…');
  clear(rollback, rollbackButton());
  return h('section', { 'aria-labelledby': 'traffic-controls' },
    h('h2#traffic-controls', 'Change traffic'),
    h('.row', canaryStart, shortcuts),
    h('form', { on: { submit: ev => { ev.preventDefault(); apply({ versions: [...weights.entries()].map(([version, weight]) => ({ version, weight })) }); } } },
      rows,
      h('.row', h('label', { for: 'add-version' }, 'Add a version'), pick,
        h('button.secondary', { type: 'button', disabled: !candidates.length, on: { click: () => { const v = Number(pick.value); if (!weights.has(v)) weights.set(v, 0); draw(); } } }, 'Add')),
      h('.row', h('button', { type: 'submit' }, 'Apply traffic split'))),
    h('.row', rollback),
    status);
}

function healthView(base, [label, span, step]) {
  return later(async () => {
    const until = new Date();
    const since = new Date(until - span * 1000);
    const hs = await api(`${base}/health?since=${since.toISOString()}&until=${until.toISOString()}&step_seconds=${step}`);
    // Steps without traffic have no point: the grid is filled so that lines break there and
    // throughput reads 0.
    const byStart = new Map(hs.points.map(p => [Date.parse(p.start) / 1000, p]));
    const first = Math.floor(Date.parse(hs.since) / 1000 / step) * step;
    const x = [];
    for (let t = first; t < Date.parse(hs.until) / 1000; t += step) x.push(t);
    const idle = { requests: 0, rows: 0, error_rate: 0, latency_ms: {} };
    const pts = x.map(t => byStart.get(t) || idle);
    const seen = p => p.requests > 0;
    const t = hs.total;
    return h('div',
      h('.cards',
        card(`Availability (${label})`, t.requests ? pct(t.availability, 3) : '–', `target ${pct(hs.availability_target, 1)} · ${t.requests ? (hs.meets_target ? 'met' : 'missed') : 'no traffic'}`),
        card('Requests', num(t.requests), `${num(t.rows)} rows`),
        card('Latency p99', ms(t.requests ? t.latency_ms.p99 : null), `p50 ${ms(t.requests ? t.latency_ms.p50 : null)} · p95 ${ms(t.requests ? t.latency_ms.p95 : null)}`),
        card('Error rate', t.requests ? pct(t.error_rate, 2) : '–', Object.entries(t.errors).map(([c, n]) => `${c}: ${n}`).join(', ') || 'no errors')),
      h('.charts',
        timeChart(`Latency (ms), ${label}`, x, ['p50', 'p95', 'p99'].map(q => ({ label: q, values: pts.map(p => (seen(p) ? p.latency_ms[q] : null)) })), { fmt: v => (v === null || v === undefined ? '–' : `${num(v)} ms`) }),
        timeChart(`Error rate, ${label}`, x, [{ label: 'errors', values: pts.map(p => (seen(p) ? p.error_rate : null)) }], { fmt: v => (v === null || v === undefined ? '–' : pct(v, 2)) }),
        timeChart(`Throughput (requests/s), ${label}`, x, [{ label: 'requests/s', values: pts.map(p => p.requests / hs.step_seconds) }])));
  });
}

function performanceView(base, [label, span]) {
  return later(async () => {
    const until = new Date();
    const since = new Date(until - span * 1000);
    const p = await api(`${base}/performance?since=${since.toISOString()}&until=${until.toISOString()}`);
    if (!p.versions.length) return h('p.muted', `No kept predictions in the last ${label}.`);
    return h('div', p.versions.map(v => h('div',
      h('h3', `v${v.version}: ${num(v.labelled)} of ${num(v.predictions)} predictions labelled `, badge(`label coverage ${pct(v.label_coverage, 1)}`, v.label_coverage > 0 ? 'ok' : 'none')),
      Object.keys(v.metrics).length
        ? table([
          { label: 'Metric', get: m => words(m) },
          { label: 'Live', num: true, get: m => num(v.metrics[m], 4) },
          { label: v.baseline ? `Baseline (${v.baseline.dataset})` : 'Baseline', num: true, get: m => (v.baseline ? num(v.baseline.metrics[m], 4) : '–') },
          { label: 'Change', num: true, get: m => { const d = v.baseline && v.baseline.delta[m]; return d === undefined || d === null ? '–' : h(d < -0.02 ? 'strong.worse' : 'span', `${d > 0 ? '+' : ''}${num(d, 4)}`); } },
          { label: 'Estimated before labels', num: true, get: m => (v.estimated && v.estimated.metrics[m] !== undefined ? num(v.estimated.metrics[m], 4) : '–') },
        ], Object.keys(v.metrics))
        : h('p.muted', 'No labels yet: post them to the feedback API (`plinth feedback`).'),
      v.estimated ? h('div',
        !Object.keys(v.metrics).length ? table([
          { label: 'Estimated metric', get: m => words(m) }, { label: 'Value', num: true, get: m => num(v.estimated.metrics[m], 4) }], Object.keys(v.estimated.metrics)) : null,
        h('p.muted', `Estimated by ${v.estimated.method} on ${num(v.estimated.rows)} rows. ${v.estimated.assumptions}`)) : null)));
  });
}

function driftView(base, [label, span]) {
  return later(async () => {
    const until = new Date();
    const since = new Date(until - span * 1000);
    const d = await api(`${base}/drift?since=${since.toISOString()}&until=${until.toISOString()}`);
    if (!d.versions.length) return h('p.muted', `No served rows in the last ${label} to compare.`);
    return h('div', d.versions.map(v => {
      const cols = Object.entries(v.columns).sort((a, b) => (b[1].drifted - a[1].drifted) || (b[1].score / (b[1].threshold || 1)) - (a[1].score / (a[1].threshold || 1)));
      const chart = (name, c) => barChart(`Distribution of ${name}: reference and current`, c.bins, [{ label: 'reference', values: c.reference }, { label: 'current', values: c.current }]);
      return h('div',
        h('h3', `v${v.version} against ${v.baseline} `, badge(`${v.drifted_columns.count} of ${cols.length} columns drifted`, v.drifted_columns.count ? 'bad' : 'ok'),
          v.drifted_columns.dataset_drift ? badge('dataset drift', 'bad') : null),
        h('p.muted', `${num(v.rows_current)} served rows in the last ${label} against ${num(v.rows_reference)} reference rows (${words(v.baseline_source)}).`),
        table([
          { label: 'Column', get: ([n]) => n },
          { label: 'Test', get: ([, c]) => c.method },
          { label: 'Score', num: true, get: ([, c]) => num(c.score, 4) },
          { label: 'Threshold', num: true, get: ([, c]) => num(c.threshold, 3) },
          { label: 'Drifted', get: ([, c]) => (c.drifted ? badge('drifted', 'bad') : badge('stable', 'ok')) },
        ], cols, { caption: `Drift of v${v.version}` }),
        h('.charts', cols.filter(([, c]) => c.drifted).map(([n, c]) => chart(n, c))),
        cols.filter(([, c]) => !c.drifted).length ? h('details', {
          on: { toggle: ev => { const el = ev.target; if (el.open && !el.dataset.drawn) { el.dataset.drawn = '1'; el.append(h('.charts', cols.filter(([, c]) => !c.drifted).map(([n, c]) => chart(n, c)))); } } },
        }, h('summary', 'Distributions of the stable columns')) : null);
    }));
  });
}

function incidentsView(team, name, canAct) {
  return later(async () => {
    const [alerts, incidents] = await Promise.all([api(`/teams/${enc(team)}/alerts`), api(`/teams/${enc(team)}/incidents`)]);
    const mine = alerts.filter(a => a.deployment === name);
    const inc = incidents.filter(i => i.deployment === name).sort((a, b) => (b.opened_at > a.opened_at ? 1 : -1));
    const act = (i, verb) => h('button', { type: 'button', on: { click: async ev => {
      ev.target.disabled = true;
      try {
        const after = await api(`/teams/${enc(team)}/incidents/${enc(i.id)}/${verb}`, { method: 'POST', body: {} });
        refresh(`Incident “${after.title}” is now ${words(after.state)}.`);
      } catch (e) { ev.target.after(errorBox(e)); ev.target.disabled = false; }
    } } }, verb === 'acknowledge' ? `Acknowledge “${i.title}”` : `Resolve “${i.title}”`);
    return h('div',
      h('h3', 'Alerts'),
      table([
        { label: 'Rule', get: a => a.rule },
        { label: 'State', get: a => badge(a.state, a.state === 'firing' ? 'bad' : a.state === 'pending' ? 'warn' : 'ok') },
        { label: 'Severity', get: a => a.severity },
        { label: 'Value / threshold', num: true, get: a => `${num(a.value, 4)} / ${num(a.threshold, 4)}` },
        { label: 'Summary', get: a => a.summary },
        { label: 'Since', get: a => when(a.active_since) },
      ], mine, { empty: 'No alert is pending or firing.' }),
      h('h3', 'Incidents'),
      table([
        { label: 'Incident', get: i => i.title },
        { label: 'State', get: i => badge(words(i.state), i.state === 'open' ? 'bad' : i.state === 'acknowledged' ? 'warn' : 'ok') },
        { label: 'Opened', get: i => when(i.opened_at) },
        { label: 'Acknowledged', get: i => (i.acknowledged_at ? [when(i.acknowledged_at), ` by ${i.acknowledged_by}`] : '–') },
        { label: 'Resolved', get: i => (i.resolved_at ? [when(i.resolved_at), ` by ${i.resolved_by}`] : '–') },
        { label: 'Actions', get: i => (canAct ? [i.state === 'open' ? act(i, 'acknowledge') : null, i.state !== 'resolved' ? act(i, 'resolve') : null] : '') },
      ], inc, { empty: 'No incidents.' }));
  });
}

function predictionsView(base, d) {
  return later(async () => {
    const rows = await api(`${base}/predictions?limit=20`);
    if (!rows.length) {
      return h('p.muted', d.spec.keep_predictions || d.spec.log_sample_rate > 0 ? 'No logged predictions yet.' : 'This deployment keeps no prediction log (keep_predictions and log_sample_rate are off).');
    }
    const short = v => { const s = JSON.stringify(v); return s.length > 120 ? `${s.slice(0, 117)}…` : s; };
    return table([
      { label: 'When', get: r => when(r.at) },
      { label: 'Version', get: r => `v${r.version}${r.shadow ? ' (shadow)' : ''}` },
      { label: 'Latency', num: true, get: r => `${num(r.latency_us / 1000)} ms` },
      { label: 'Inputs', get: r => h('code', short(r.inputs)) },
      { label: 'Outputs', get: r => (r.error ? h('span.error', r.error) : h('code', short(r.outputs))) },
      { label: 'Caller', get: r => r.caller },
    ], rows, { caption: 'Prediction log sample' });
  });
}

export async function render([team, model, env], session) {
  const base = `/deployments/${enc(team)}/${enc(model)}/${enc(env)}`;
  const [d, versions] = await Promise.all([api(base), all(`/teams/${enc(team)}/models/${enc(model)}/versions`)]);
  const name = deploymentName(d);
  const range = RANGES.find(r => r[0] === (sessionStorage.getItem('plinth.range') || '24h')) || RANGES[2];
  const rangePick = h('select#range', { on: { change: ev => { sessionStorage.setItem('plinth.range', ev.target.value); refresh(); } } },
    RANGES.map(([l]) => h('option', { value: l, selected: l === range[0] }, `last ${l}`)));
  return h('section',
    h('p.crumbs', link('#/', 'Teams'), ' / ', link(`#/teams/${enc(team)}`, team), ' / ', link(`#/teams/${enc(team)}/models/${enc(model)}`, model), ' / ', env),
    h('h1', `${model} @ ${env}`),
    h('p#traffic', { 'aria-live': 'polite' }, `Serving ${traffic(d)} · revision ${d.revision} · changed `, when(d.updated_at), ` by ${d.updated_by}`,
      d.spec.public ? ' · public' : '', d.granted_teams.length ? ` · granted to ${d.granted_teams.join(', ')}` : ''),
    session.can(team, 'maintainer') ? controls(d, versions, base) : null,
    h('.row', h('label', { for: 'range' }, 'Time range'), rangePick),
    h('h2', 'Health'),
    healthView(base, range),
    h('h2', 'Live accuracy'),
    performanceView(base, range),
    h('h2', 'Drift'),
    driftView(base, range),
    h('h2', 'Alerts and incidents'),
    incidentsView(team, name, session.can(team, 'developer')),
    h('h2', 'Prediction log (sample)'),
    predictionsView(base, d),
    h('h2', 'History'),
    later(async () => {
      const revs = await api(`${base}/history?limit=20`);
      return table([
        { label: 'Revision', num: true, get: r => r.revision },
        { label: 'Change', get: r => words(r.action) },
        { label: 'Traffic', get: r => r.spec.versions.map(v => `v${v.version} ${v.weight}%`).join(', ') },
        { label: 'When', get: r => when(r.at) },
        { label: 'By', get: r => r.by },
      ], revs.items, { caption: 'Revisions of this deployment' });
    }));
}
