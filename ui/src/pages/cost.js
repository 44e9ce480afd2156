// Cost: this month's charges so far, quota use, statements by month with their lines, and cost
// per 1,000 predictions per model.

import { h, table, card, later, clear, errorBox, link, num, pct, usd, bytes, badge, words } from '../dom.js';
import { api, enc } from '../api.js';

function quotaRow(label, used, limit, fmt) {
  return { label, used: fmt(used), limit: limit === null || limit === undefined ? 'no limit' : fmt(limit),
    share: limit ? used / limit : null };
}

function statementView(s) {
  return h('div',
    h('h3', `Statement ${s.month} `, badge(words(s.status), s.status === 'closed' ? 'ok' : 'warn'), ` total ${usd(s.total_usd)}`),
    h('p.muted', `Plan ${s.plan.name}: ${num(s.predictions.predictions)} predictions, ${num(s.predictions.free)} free, ${num(s.predictions.billed)} billed.`),
    table([
      { label: 'Item', get: l => words(l.item) },
      { label: 'Model', get: l => l.model || '–' },
      { label: 'Subject', get: l => l.subject || '' },
      { label: 'Quantity', num: true, get: l => `${num(l.quantity)} ${l.unit}` },
      { label: 'Rate', num: true, get: l => usd(l.rate_usd) },
      { label: 'Amount', num: true, get: l => usd(l.amount_usd) },
    ], s.lines, { caption: `Lines of ${s.month}`, empty: 'No charges.' }),
    h('h3', 'Cost per model'),
    table([
      { label: 'Model', get: m => m.model },
      { label: 'Predictions', num: true, get: m => num(m.predictions) },
      { label: 'Cost', num: true, get: m => usd(m.amount_usd) },
      { label: 'Per 1,000 predictions', num: true, get: m => (m.cost_per_1000_predictions_usd === null ? '–' : usd(m.cost_per_1000_predictions_usd)) },
    ], s.models, { caption: `Cost per model, ${s.month}`, empty: 'No model cost.' }));
}

export async function render([team]) {
  const base = `/teams/${enc(team)}`;
  const [b, statements] = await Promise.all([api(`${base}/billing`), api(`${base}/statements`)]);
  const q = b.quotas;
  const quotas = [
    quotaRow('Predictions this month', b.predictions_this_month, q.predictions_per_month, num),
    quotaRow('Storage', b.storage_bytes, q.storage_bytes, bytes),
    { label: 'Requests per second', used: '–', limit: q.requests_per_second === null ? 'no limit' : num(q.requests_per_second), share: null },
  ];
  const months = statements.map(s => s.month);
  const shown = h('div');
  const pick = h('select#month', { on: { change: ev => show(ev.target.value) } }, months.map(m => h('option', { value: m }, m)));
  const csvStatus = h('span', { 'aria-live': 'polite' });
  async function show(month) {
    clear(shown, h('p.muted.loading', 'Loading…'));
    try {
      const s = await api(`${base}/statements/${enc(month)}`);
      // A slower answer for a month no longer selected is dropped.
      if (pick.value === month) clear(shown, statementView(s));
    } catch (e) { if (pick.value === month) clear(shown, errorBox(e)); }
  }
  const csv = h('button.secondary', { type: 'button', on: { click: async () => {
    clear(csvStatus);
    try {
      const blob = await api(`${base}/statements/${enc(pick.value)}?format=csv`, { as: 'blob' });
      const url = URL.createObjectURL(blob);
      const a = h('a', { href: url, download: `${team}-${pick.value}.csv` });
      document.body.append(a); a.click(); a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (e) { clear(csvStatus, errorBox(e)); }
  } } }, 'Download as CSV');
  if (months.length) show(months[0]);
  return h('section',
    h('p.crumbs', link('#/', 'Teams'), ' / ', link(`#/teams/${enc(team)}`, team), ' / cost'),
    h('h1', `Cost of ${team}`),
    h('.cards',
      card(`Cost so far in ${b.month}`, usd(b.cost_this_month_usd), b.budget_usd === null ? 'no budget set' : `budget ${usd(b.budget_usd)}${b.budget_usd > 0 ? ` · ${pct(b.cost_this_month_usd / b.budget_usd, 0)} used` : ''}`),
      card('Plan', b.plan, b.next_plan ? `${b.next_plan} from next month` : ''),
      card('Predictions this month', num(b.predictions_this_month))),
    h('h2', 'Quota use'),
    table([
      { label: 'Quota', get: r => r.label },
      { label: 'Used', num: true, get: r => r.used },
      { label: 'Limit', num: true, get: r => r.limit },
      { label: 'Share used', num: true, get: r => (r.share === null ? '–' : badge(pct(r.share, 1), r.share >= 1 ? 'bad' : r.share >= 0.8 ? 'warn' : 'ok')) },
    ], quotas, { caption: 'Quotas' }),
    h('h2', 'Statements'),
    months.length ? h('div', h('.row', h('label', { for: 'month' }, 'Month'), pick, csv, csvStatus), shown)
      : h('p.muted', 'No statement yet: the first appears with the first metered use.'),
    h('h2', 'This month by item'),
    later(async () => {
      const u = await api(`${base}/usage`);
      return table([
        { label: 'Item', get: i => words(i.item) },
        { label: 'Model', get: i => (i.model ? `${i.model}${i.version ? ` v${i.version}` : ''}` : '–') },
        { label: 'Subject', get: i => i.subject || '' },
        { label: 'Predictions', num: true, get: i => num(i.predictions) },
        { label: 'Requests', num: true, get: i => num(i.requests) },
        { label: 'CPU seconds', num: true, get: i => num(i.cpu_seconds) },
        { label: 'GB-hours', num: true, get: i => num(i.gb_hours) },
      ], u.items, { caption: `Usage in ${u.month}`, empty: 'No use metered this month.' });
    }));
}
