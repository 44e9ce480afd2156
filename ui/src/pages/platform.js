// Platform (admins): the brief's dashboard from live figures: adoption, quality, business and
// delivery (DORA), with their monthly trends.

import { h, table, card, num, pct, usd, words } from '../dom.js';
import { api } from '../api.js';
import { timeChart } from '../charts.js';

// A duration for people, from minutes.
function duration(minutes) {
  if (minutes === null || minutes === undefined) return '–';
  if (minutes < 1) return `${Math.max(1, Math.round(minutes * 60))} s`;
  if (minutes < 120) return `${num(minutes, minutes < 10 ? 1 : 0)} min`;
  if (minutes < 72 * 60) return `${num(minutes / 60, 1)} h`;
  return `${num(minutes / 1440, 1)} days`;
}
// A card of percentiles of durations given in `unit` ('min' or 'h'): the median, then p90.
function pcard(label, p, unit, note) {
  const m = unit === 'h' ? 60 : 1;
  if (!p || !p.count) return card(label, '–', note ? `${note} · no data yet` : 'no data yet');
  return card(label, duration(p.median * m), `median · p90 ${duration(p.p90 * m)} · ${num(p.count)} measured${note ? ` · ${note}` : ''}`);
}
const monthX = trend => trend.map(t => Date.parse(`${t.month}-01T00:00:00Z`) / 1000);

export async function render(_params, session) {
  if (!session.isAdmin) {
    return h('section', h('h1', 'Platform'), h('p.notice', 'The platform dashboard is for platform admins. Your team\'s own figures are on its page and its cost page.'));
  }
  const r = await api('/platform/report');
  const a = r.adoption, q = r.quality, b = r.business, d = r.delivery, s = r.satisfaction;
  return h('section',
    h('h1', `Platform, ${r.month}`),
    h('p.muted', `Generated ${new Date(r.generated_at).toLocaleString('en-GB')}`),
    h('h2', 'Adoption'),
    h('.cards',
      card('Active teams', `${num(a.teams_active)} of ${num(a.teams_total)}`, 'teams with predictions this month'),
      card('Models registered', num(a.models_registered)),
      card('Models deployed', num(a.models_deployed)),
      card('Predictions this month', num(a.predictions_this_month), `last month ${num(a.predictions_last_month)}${a.growth !== null ? ` · growth ${pct(a.growth, 1)}` : ''}`)),
    h('.charts', timeChart('Predictions per month', monthX(a.predictions_trend), [{ label: 'predictions', values: a.predictions_trend.map(t => t.value) }])),
    h('h2', 'Quality'),
    h('.cards',
      card('Availability', q.availability === null ? '–' : pct(q.availability, 3), `target ${pct(q.availability_target, 1)}`),
      card('Average live accuracy', q.average_live_accuracy === null ? '–' : pct(q.average_live_accuracy, 1), `${num(q.models_with_labels)} models with labels`),
      card('Incidents opened', num(q.incidents_opened)),
      pcard('Time to acknowledge', q.mtta_minutes, 'min'),
      pcard('Time to resolve', q.mttr_minutes, 'min'),
      card('Satisfaction (CSAT)', s.csat === null ? '–' : pct(s.csat, 0), `${num(s.answers)} answers${s.mean_score !== null ? ` · mean ${num(s.mean_score, 2)} of 5` : ''}`)),
    h('h2', 'Business'),
    h('.cards',
      card('Cost this month', usd(b.cost_usd)),
      card('Cost per 1,000 predictions', b.cost_per_prediction_usd === null ? '–' : usd(b.cost_per_prediction_usd * 1000)),
      pcard('Time to launch', b.time_to_launch_hours, 'h', 'a model\'s first version to its first production prediction')),
    h('.charts', timeChart('Cost per 1,000 predictions by month (USD)', monthX(b.cost_per_prediction_trend), [{ label: 'USD per 1,000', values: b.cost_per_prediction_trend.map(t => t.value * 1000) }], { fmt: v => (v === null || v === undefined ? '–' : usd(v)) })),
    table([{ label: 'Team', get: ([t]) => t }, { label: 'Cost this month', num: true, get: ([, c]) => usd(c) }],
      Object.entries(b.cost_by_team).sort((x, y) => y[1] - x[1]), { caption: 'Cost by team', empty: 'No cost yet this month.' }),
    h('h2', 'Delivery (DORA)'),
    h('.cards',
      card('Deployment frequency', words(d.deployment_frequency), `${num(d.deployments)} production deployments this month`),
      pcard('Lead time for changes', d.lead_time_hours, 'h'),
      card('Change failure rate', d.change_failure_rate === null ? '–' : pct(d.change_failure_rate, 1), `a rollback or incident within ${d.failure_window_hours} h`),
      pcard('Time to restore', d.time_to_restore_hours, 'h')));
}
