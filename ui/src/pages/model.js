// Model: versions with format, signature, card and lineage; evaluations with metrics,
// calibration and per-group fairness; what served where and when.

import { h, table, link, badge, later, num, pct, bytes, when, words } from '../dom.js';
import { api, all, enc } from '../api.js';
import { calibrationChart, groupBars } from '../charts.js';
import { deploymentHref } from './team.js';

function cardView(c) {
  const fields = [['Intended use', c.intended_use], ['Limitations', c.limitations], ['Training data', c.training_data],
    ['Evaluation data', c.evaluation_data], ['Ethical considerations', c.ethical_considerations], ['Risk tier', c.risk_tier], ['Owners', (c.owners || []).join(', ')]];
  const filled = fields.filter(([, v]) => v);
  if (!filled.length) return h('p.muted', 'No model card yet.');
  return h('dl', filled.map(([k, v]) => [h('dt', h('strong', k)), h('dd', v)]));
}
export { cardView };

function lineageView(l) {
  const bits = [];
  if (l.source) bits.push(['Source', words(l.source)]);
  if (l.dataset_version) bits.push(['Dataset', l.dataset_version]);
  if (l.training_job) bits.push(['Training run', l.training_job]);
  if (l.code_ref) bits.push(['Code', l.code_ref]);
  for (const [k, v] of Object.entries(l.parameters || {})) bits.push([`param ${k}`, v]);
  for (const [k, v] of Object.entries(l.metrics || {})) bits.push([`metric ${k}`, num(v, 4)]);
  return bits.length ? h('ul', bits.map(([k, v]) => h('li', `${k}: ${v}`))) : h('span.muted', 'none recorded');
}

function signatureView(s) {
  const inputs = s.inputs.map(t => `${t.name} ${t.datatype} [${t.shape.join(', ')}]`).join('; ');
  const names = s.feature_names || [];
  return h('details', h('summary', names.length ? `${names.length} features` : 'signature'),
    h('p', `Inputs: ${inputs}`), h('p', `Outputs: ${s.outputs.map(t => `${t.name} ${t.datatype}`).join('; ')}`),
    names.length ? h('p', `Features: ${names.join(', ')}`) : null);
}

export function metricsTable(metrics, baseline) {
  const names = Object.keys(metrics);
  return table([
    { label: 'Metric', get: m => words(m) },
    { label: 'Value', num: true, get: m => num(metrics[m], 4) },
    ...(baseline ? [{ label: `In ${baseline.environment} (v${baseline.version})`, num: true, get: m => num(baseline.metrics[m], 4) },
      { label: 'Difference', num: true, get: m => { const d = baseline.delta[m]; return d === undefined ? '–' : `${d > 0 ? '+' : ''}${num(d, 4)}`; } }] : []),
  ], names, { caption: 'Metrics' });
}

export function fairnessView(fairness) {
  const attrs = Object.entries(fairness || {});
  if (!attrs.length) return h('p.muted', 'No sensitive features evaluated.');
  return attrs.map(([attr, f]) => h('div',
    h('h4', `Fairness by ${attr}`),
    h('p', badge(f.four_fifths_rule ? 'four-fifths rule holds' : 'four-fifths rule fails', f.four_fifths_rule ? 'ok' : 'bad'),
      ` demographic parity difference ${num(f.demographic_parity_difference, 3)}, ratio ${num(f.demographic_parity_ratio, 3)}; equalized odds difference ${num(f.equalized_odds_difference, 3)}, ratio ${num(f.equalized_odds_ratio, 3)}`),
    h('.charts',
      groupBars(`Selection rate by ${attr}`, Object.entries(f.by_group).map(([g, m]) => ({ label: `${g} (${num(m.count)})`, value: m.selection_rate }))),
      groupBars(`True positive rate by ${attr}`, Object.entries(f.by_group).map(([g, m]) => ({ label: g, value: m.tpr }))),
      groupBars(`Accuracy by ${attr}`, Object.entries(f.by_group).map(([g, m]) => ({ label: g, value: m.accuracy }))))));
}

export function evaluationView(e) {
  const head = h('h3', `Evaluation of v${e.version} on ${e.dataset} `, badge(words(e.status), e.status === 'succeeded' ? 'ok' : e.status === 'failed' ? 'bad' : 'none'));
  if (e.status !== 'succeeded' || !e.result) {
    return h('div', head, e.error ? h('p.error', e.error) : h('p.muted', `Progress ${pct(e.progress, 0)}`));
  }
  const r = e.result;
  return h('div', head,
    h('p.muted', `${num(r.rows)} rows, label “${e.label}”`, e.finished_at ? [', finished ', when(e.finished_at)] : ''),
    metricsTable(r.metrics, r.baseline),
    r.calibration ? calibrationChart(`Calibration of v${e.version} on ${e.dataset}`, r.calibration) : null,
    fairnessView(r.fairness));
}

export async function render([team, model], session) {
  const base = `/teams/${enc(team)}/models/${enc(model)}`;
  const [m, versions, deployments] = await Promise.all([
    api(base), all(`${base}/versions?include_archived=true`), all(`/deployments?team=${enc(team)}`),
  ]);
  const mine = deployments.filter(d => d.model === model);
  versions.sort((a, b) => b.version - a.version);
  return h('section',
    h('p.crumbs', link('#/', 'Teams'), ' / ', link(`#/teams/${enc(team)}`, team), ' / ', model),
    h('h1', m.name, ' ', h('span.muted', words(m.task))),
    m.description ? h('p', m.description) : null,
    h('p.muted', `Owners: ${m.owners.join(', ') || '–'}`, Object.keys(m.tags).length ? ` · tags: ${Object.entries(m.tags).map(([k, v]) => `${k}=${v}`).join(', ')}` : ''),
    h('h2', 'Deployed'),
    table([
      { label: 'Environment', get: d => link(deploymentHref(d), d.environment) },
      { label: 'Traffic', get: d => d.spec.versions.map(v => `v${v.version} ${v.weight}%`).join(', ') },
      { label: 'Revision', num: true, get: d => d.revision },
      { label: 'Changed', get: d => [when(d.updated_at), ` by ${d.updated_by}`] },
    ], mine, { empty: 'Not deployed anywhere.' }),
    h('h2', 'Versions'),
    table([
      { label: 'Version', num: true, get: v => [`v${v.version}`, v.archived_at ? h('div', badge('archived', 'none')) : null] },
      { label: 'Format', get: v => [v.artifact.format, h('div.muted', bytes(v.artifact.size_bytes))] },
      { label: 'Signature', get: v => signatureView(v.signature) },
      { label: 'Approval', get: v => v.approval === 'none' ? h('span.muted', 'not approved') : badge(words(v.approval), 'ok') },
      { label: 'Card', get: v => h('details', h('summary', v.card.intended_use ? 'model card' : 'model card (empty)'), cardView(v.card)) },
      { label: 'Lineage', get: v => lineageView(v.lineage) },
      { label: 'Created', get: v => [when(v.created_at), h('div.muted', v.created_by)] },
    ], versions, { caption: 'Versions', empty: 'No versions: upload one with `plinth upload`.' }),
    h('h2', 'Evaluations'),
    later(async () => {
      const evals = await api(`${base}/evaluations`);
      evals.sort((a, b) => (b.created_at > a.created_at ? 1 : -1));
      if (!evals.length) return h('p.muted', 'No evaluations yet: `plinth evaluate` runs one on a dataset.');
      return h('div', evals.slice(0, 5).map(evaluationView),
        evals.length > 5 ? h('p.muted', `${evals.length - 5} older evaluations are in the API.`) : null);
    }),
    h('h2', 'What served where, and when'),
    later(async () => {
      if (!mine.length) return h('p.muted', 'Never deployed.');
      const histories = await Promise.all(mine.map(d => api(`/deployments/${enc(team)}/${enc(model)}/${enc(d.environment)}/history?limit=50`).then(p => p.items.map(r => ({ ...r, environment: d.environment })))));
      const revisions = histories.flat().sort((a, b) => (b.at > a.at ? 1 : -1));
      return table([
        { label: 'When', get: r => when(r.at) },
        { label: 'Environment', get: r => r.environment },
        { label: 'Revision', num: true, get: r => r.revision },
        { label: 'Change', get: r => words(r.action) },
        { label: 'Traffic', get: r => r.spec.versions.map(v => `v${v.version} ${v.weight}%`).join(', ') },
        { label: 'By', get: r => r.by },
      ], revisions, { caption: 'Deployment history' });
    }));
}
