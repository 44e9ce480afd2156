// Charts with uPlot (vendor/, from npm): time series, distributions, calibration. Each chart is
// labelled for assistive technology and carries its data as a table under a disclosure, and
// records how many points it drew (data-points) for the browser tests.

import { h, num } from './dom.js';

const COLORS = ['#0b57d0', '#c0561b', '#146c2e', '#8e24aa', '#b3261e', '#00796b'];

function width(columns = 2) {
  const main = document.getElementById('main');
  const w = main ? main.clientWidth - 40 : 800;
  return Math.max(320, Math.min(760, Math.floor(w / columns) - 12));
}

// uPlot lays out into the element it is given: drawn once the figure is in the page, as wide as
// its column.
function draw(opts, data, el) {
  requestAnimationFrame(() => {
    if (el.clientWidth > 0) opts.width = Math.max(280, el.clientWidth - 4);
    new window.uPlot(opts, data, el);
  });
}

function figure(title, points, plotEl, dataTable) {
  return h('figure.chart', { role: 'group', 'aria-label': title, dataset: { points: String(points), chart: title } },
    h('figcaption.title', title), plotEl,
    h('details', h('summary', `Data of “${title}”`), dataTable));
}

function countPoints(series) {
  return series.reduce((n, s) => n + s.values.filter(v => v !== null && v !== undefined && !Number.isNaN(v)).length, 0);
}

// x: unix seconds; series: [{label, values}]; fmt formats a y value.
export function timeChart(title, x, series, { fmt = num, columns = 2 } = {}) {
  const plot = h('div', { 'aria-hidden': 'true' });
  const points = countPoints(series);
  const rows = x.map((t, i) => h('tr', h('td', new Date(t * 1000).toISOString()),
    series.map(s => h('td.num', fmt(s.values[i])))));
  const dataTable = h('table', h('thead', h('tr', h('th', 'time'), series.map(s => h('th.num', s.label)))), h('tbody', rows));
  if (window.uPlot && x.length) {
    const opts = {
      width: width(columns), height: 200,
      series: [{}, ...series.map((s, i) => ({ label: s.label, stroke: COLORS[i % COLORS.length], width: 2, value: (u, v) => fmt(v), spanGaps: false, points: { show: x.length <= 400, size: 4 } }))],
      axes: [{}, { values: (u, vals) => vals.map(v => fmt(v)), size: 84 }],
      scales: { y: { range: (u, min, max) => [Math.min(0, min), max > 0 ? max * 1.1 : 1] } },
    };
    draw(opts, [x, ...series.map(s => s.values)], plot);
  } else if (!x.length) {
    plot.append(h('p.muted', 'No points in this range yet.'));
  }
  return figure(title, points, plot, dataTable);
}

// Distributions side by side: bins (labels) × series of shares.
export function barChart(title, bins, series, { fmt = v => `${(v * 100).toFixed(1)} %`, columns = 2 } = {}) {
  const plot = h('div', { 'aria-hidden': 'true' });
  const points = countPoints(series);
  const dataTable = h('table', h('thead', h('tr', h('th', 'bin'), series.map(s => h('th.num', s.label)))),
    h('tbody', bins.map((b, i) => h('tr', h('td', b), series.map(s => h('td.num', fmt(s.values[i])))))));
  if (window.uPlot && bins.length) {
    const xs = bins.map((_, i) => i);
    const n = series.length;
    const opts = {
      width: width(columns), height: 200,
      scales: { x: { time: false, range: [-0.5, bins.length - 0.5] }, y: { range: (u, min, max) => [0, max * 1.1 || 1] } },
      axes: [{ values: (u, vals) => vals.map(v => (Number.isInteger(v) && bins[v] !== undefined ? shorten(bins[v]) : '')), space: 48, incrs: [1, 2, 5, 10, 20, 50], size: 40 },
        { values: (u, vals) => vals.map(fmt), size: 60 }],
      series: [{ label: 'bin', value: (u, v) => (v === null ? '' : bins[v]) }, ...series.map((s, i) => ({
        label: s.label, fill: COLORS[i % COLORS.length] + 'cc', stroke: COLORS[i % COLORS.length], width: 1,
        value: (u, v) => fmt(v),
        paths: window.uPlot.paths.bars({ size: [0.8 / n, 80], align: n === 1 ? 0 : (i === 0 ? -1 : 1) }),
        points: { show: false },
      }))],
    };
    draw(opts, [xs, ...series.map(s => s.values)], plot);
  }
  return figure(title, points, plot, dataTable);
}

// A bin's label on the axis: numbers to 3 significant digits, long names cut.
function shorten(label) {
  const s = String(label);
  const n = Number(s);
  if (s.trim() !== '' && Number.isFinite(n)) return Math.abs(n) >= 1000 ? n.toFixed(0) : String(Number(n.toPrecision(3)));
  return s.length > 14 ? `${s.slice(0, 13)}…` : s;
}

// Reliability diagram: mean predicted probability against the observed frequency, per bin.
export function calibrationChart(title, cal, { columns = 2 } = {}) {
  const order = cal.prob_pred.map((_, i) => i).sort((a, b) => cal.prob_pred[a] - cal.prob_pred[b]);
  const x = order.map(i => cal.prob_pred[i]);
  const observed = order.map(i => cal.prob_true[i]);
  const plot = h('div', { 'aria-hidden': 'true' });
  const dataTable = h('table', h('thead', h('tr', h('th.num', 'predicted'), h('th.num', 'observed'), h('th.num', 'rows'))),
    h('tbody', order.map(i => h('tr', h('td.num', num(cal.prob_pred[i], 3)), h('td.num', num(cal.prob_true[i], 3)), h('td.num', num(cal.counts[i]))))));
  if (window.uPlot && x.length) {
    const opts = {
      width: width(columns), height: 220,
      scales: { x: { time: false, range: [0, 1] }, y: { range: [0, 1] } },
      series: [{ label: 'predicted' },
        { label: 'observed', stroke: COLORS[0], width: 2, points: { show: true } },
        { label: 'perfectly calibrated', stroke: '#767676', dash: [4, 4], width: 1, points: { show: false } }],
    };
    draw(opts, [x, observed, x], plot);
  }
  return figure(title, x.length, plot, dataTable);
}

// Horizontal bars in HTML (no canvas): per-group figures such as a fairness metric.
export function groupBars(title, groups, { fmt = v => `${(v * 100).toFixed(1)} %`, max = 1 } = {}) {
  const top = Math.max(max, ...groups.map(g => g.value || 0));
  return h('figure.chart', { role: 'group', 'aria-label': title, dataset: { points: String(groups.length), chart: title } },
    h('figcaption.title', title),
    h('.bars', groups.map((g, i) => [
      h('span', g.label),
      h('span', h(i % 2 ? '.bar.alt' : '.bar', { style: { width: `${Math.max(0, (g.value || 0) / top) * 100}%` }, 'aria-hidden': 'true' })),
      h('span.num', fmt(g.value)),
    ])));
}
