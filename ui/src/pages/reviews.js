// Review queue: the promotions the caller may review, each with its automated checks, the
// evaluation report, fairness, the model card and the difference from the version in production;
// approve, request changes or reject with a comment.

import { h, table, link, badge, later, clear, errorBox, when, words, num } from '../dom.js';
import { api, enc } from '../api.js';
import { cardView, metricsTable, fairnessView } from './model.js';
import { calibrationChart } from '../charts.js';

const CARD_FIELDS = ['intended_use', 'limitations', 'training_data', 'evaluation_data', 'ethical_considerations', 'risk_tier'];

async function production(p) {
  try {
    return await api(`/deployments/${enc(p.team)}/${enc(p.model)}/${enc(p.environment)}`);
  } catch (e) {
    if (e.status === 404) return null;
    throw e;
  }
}

async function difference(p) {
  const dep = await production(p);
  const candidate = await api(`/teams/${enc(p.team)}/models/${enc(p.model)}/versions/${p.version}`);
  if (!dep) return h('div', h('p', `Nothing serves ${p.environment} yet: v${p.version} would be the first version there.`), h('h4', 'Model card'), cardView(candidate.card));
  const main = dep.spec.versions.reduce((a, b) => (b.weight > a.weight ? b : a));
  const current = await api(`/teams/${enc(p.team)}/models/${enc(p.model)}/versions/${main.version}`);
  const changed = CARD_FIELDS.filter(f => (candidate.card[f] || '') !== (current.card[f] || ''));
  // The metrics of both versions on the same dataset, where both were evaluated on it.
  const evals = (await api(`/teams/${enc(p.team)}/models/${enc(p.model)}/evaluations`)).filter(e => e.status === 'succeeded' && e.result);
  const latest = (version, dataset) => evals.filter(e => e.version === version && (!dataset || e.dataset === dataset)).sort((a, b) => (b.created_at > a.created_at ? 1 : -1))[0];
  const mine = (p.evaluation && evals.find(e => e.id === p.evaluation)) || latest(candidate.version);
  const theirs = mine && latest(current.version, mine.dataset);
  const metricRows = mine && theirs ? Object.keys(mine.result.metrics).filter(k => k in theirs.result.metrics).map(k => {
    const [a, b] = [theirs.result.metrics[k], mine.result.metrics[k]];
    return [`${words(k)} on ${mine.dataset}`, num(a, 4), `${num(b, 4)} (${b - a >= 0 ? '+' : ''}${num(b - a, 4)})`];
  }) : [];
  const sig = v => (v.signature.feature_names || []).join(', ') || v.signature.inputs.map(t => `${t.name} [${t.shape.join(', ')}]`).join('; ');
  return h('div',
    h('p', `${p.environment} now serves ${dep.spec.versions.map(v => `v${v.version} ${v.weight}%`).join(', ')}.`),
    table([
      { label: 'Aspect', get: r => r[0] },
      { label: `In ${p.environment} (v${current.version})`, get: r => r[1] },
      { label: `Requested (v${candidate.version})`, get: r => r[2] },
    ], [
      ['Format', current.artifact.format, candidate.artifact.format],
      ['Features', sig(current), sig(candidate) === sig(current) ? 'same' : sig(candidate)],
      ['Created', when(current.created_at), when(candidate.created_at)],
      ['Dataset', current.lineage.dataset_version || '–', candidate.lineage.dataset_version || '–'],
      ...metricRows,
      ...changed.map(f => [`Card: ${words(f)}`, current.card[f] || '–', candidate.card[f] || '–']),
    ], { caption: 'Difference from production' }),
    mine && !theirs ? h('p.muted', `v${current.version} has no evaluation on ${mine.dataset} to compare with.`) : null,
    h('h4', 'Model card of the requested version'), cardView(candidate.card));
}

function decide(p, status) {
  const comment = h('textarea', { id: `comment-${p.id}`, rows: 2, cols: 60 });
  const send = decision => async ev => {
    ev.preventDefault();
    for (const b of form.querySelectorAll('button')) b.disabled = true;
    try {
      const after = await api(`/promotions/${enc(p.id)}/reviews`, { method: 'POST', body: { decision, comment: comment.value || null } });
      const where = `#/teams/${enc(p.team)}/deployments/${enc(p.model)}/${enc(p.environment)}`;
      const noun = { approve: 'approval', request_changes: 'request for changes', reject: 'rejection' }[decision];
      clear(status, h('p.notice', { role: 'status' }, `Your ${noun} was recorded: the promotion is now ${words(after.status)}. `,
        after.status === 'deployed' ? link(where, `See ${p.model} @ ${p.environment}`) : `${after.reviews.length} of ${after.required_reviewers} reviews.`));
      form.remove();
    } catch (e) {
      clear(status, errorBox(e));
      for (const b of form.querySelectorAll('button')) b.disabled = false;
    }
  };
  const form = h('form', { on: { submit: send('approve') } },
    h('label', { for: `comment-${p.id}` }, `Comment on ${p.model} v${p.version}`), h('br'), comment,
    h('.row',
      h('button', { type: 'submit' }, `Approve ${p.model} v${p.version}`),
      h('button.secondary', { type: 'button', 'aria-label': `Request changes to ${p.model} v${p.version}`, on: { click: send('request_changes') } }, 'Request changes'),
      h('button.danger', { type: 'button', 'aria-label': `Reject ${p.model} v${p.version}`, on: { click: send('reject') } }, 'Reject')));
  return form;
}

function promotionView(p) {
  const status = h('div', { 'aria-live': 'polite' });
  return h('article.card', { 'aria-labelledby': `p-${p.id}` },
    h('h2', { id: `p-${p.id}` }, `${p.team} / ${p.model} v${p.version} → ${p.environment}`),
    h('p', `Requested by ${p.requested_by} `, when(p.requested_at), ` · risk tier ${p.risk_tier} · ${p.reviews.length} of ${p.required_reviewers} reviews`,
      p.canary_weight ? ` · starts as a ${p.canary_weight} % canary` : ''),
    p.note ? h('blockquote', p.note) : null,
    p.reviews.length ? table([{ label: 'Reviewer', get: r => r.reviewer }, { label: 'Decision', get: r => words(r.decision) }, { label: 'Comment', get: r => r.comment }, { label: 'When', get: r => when(r.at) }], p.reviews) : null,
    h('h3', 'Automated checks'),
    table([
      { label: 'Check', get: c => words(c.name) },
      { label: 'Result', get: c => badge(c.status, c.status === 'passed' ? 'ok' : c.status === 'failed' ? 'bad' : c.status === 'flagged' ? 'warn' : 'none') },
      { label: 'Evidence', get: c => c.evidence },
    ], p.checks, { empty: 'No checks ran.' }),
    h('h3', 'Evaluation'),
    p.evaluation ? later(async () => {
      const e = await api(`/evaluations/${enc(p.evaluation)}`);
      if (!e.result) return h('p.muted', `Evaluation ${words(e.status)}.`);
      return h('div', h('p.muted', `On ${e.dataset}, ${num(e.result.rows)} rows, label “${e.label}”.`),
        metricsTable(e.result.metrics, e.result.baseline),
        e.result.calibration ? calibrationChart(`Calibration of v${p.version}`, e.result.calibration) : null,
        fairnessView(e.result.fairness));
    }) : h('p.muted', 'No evaluation is attached to this request.'),
    h('h3', `Difference from the version in ${p.environment}`),
    later(() => difference(p)),
    h('h3', 'Your decision'),
    decide(p, status), status);
}

export async function render() {
  const pending = await api('/promotions?reviewable=true&status=pending_review&limit=100');
  const items = Array.isArray(pending) ? pending : pending.items;
  return h('section',
    h('h1', 'Review queue'),
    items.length
      ? h('div', h('p', items.length === 1 ? 'One promotion waits for your review.' : `${items.length} promotions wait for your review.`), items.map(promotionView))
      : h('p.notice', 'Nothing waits for your review. Promotions you may review (not your own, in environments that need a review) appear here.'));
}
