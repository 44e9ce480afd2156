// The dashboard in a real browser: playwright-core drives Debian's chromium through what users
// do. Run by the Rust test `ui::the_dashboard_works_in_a_real_browser`, which makes the data and
// passes the server, keys and names in PLINTH_UI_TEST. Screenshots of every page go to the
// artifacts folder (failures as failed-*.png). The last line printed is the pages' timings.

import { chromium } from 'playwright-core';
import { readFileSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const cfg = JSON.parse(process.env.PLINTH_UI_TEST);
const here = dirname(fileURLToPath(import.meta.url));
mkdirSync(cfg.artifacts, { recursive: true });
const { team, model } = cfg;
const timings = {};
const failures = [];

// The embedded charting library is the one npm installed from the lock file.
for (const f of ['uPlot.iife.min.js', 'uPlot.min.css']) {
  const vendored = readFileSync(join(here, '../src/vendor', f));
  const installed = readFileSync(join(here, '../node_modules/uplot/dist', f));
  if (!vendored.equals(installed)) failures.push(`src/vendor/${f} differs from node_modules/uplot/dist/${f}: run ui/vendor.sh`);
}

const browser = await chromium.launch({ executablePath: cfg.chromium, args: ['--no-sandbox', '--disable-gpu'] });

function expect(cond, what) { if (!cond) throw new Error(what); }

async function session(name) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', e => problems.push(`page error: ${e.message}`));
  page.on('console', m => { if (m.type() === 'error' && !/status of 40[134]/.test(m.text())) problems.push(`console: ${m.text()}`); });
  page.on('request', r => { if (!r.url().startsWith(cfg.url) && !r.url().startsWith('blob:') && !r.url().startsWith('data:')) problems.push(`request outside the server: ${r.url()}`); });
  return { name, page, context, problems };
}

// Opens `hash` as a fresh load and waits for its content; records how long that took.
async function open(s, hash, label) {
  await s.page.goto('about:blank');
  await s.page.goto(`${cfg.url}/ui/${hash}`);
  await s.page.waitForSelector(`body[data-ready="${hash}"]`, { timeout: 15000 });
  // Sections that load after the main content (charts, badges) settle too.
  await s.page.waitForFunction(() => !document.querySelector('.loading'), null, { timeout: 15000 });
  // ready: the page's main content in; settled: every section in, charts drawn; both in ms
  // since the navigation began.
  const t = await s.page.evaluate(() => ({
    ready: Number(document.body.dataset.readyAt),
    settled: Math.round(performance.now()),
    first_contentful_paint: Math.round((performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime || 0),
  }));
  if (label) timings[label] = t;
  await s.page.screenshot({ path: join(cfg.artifacts, `${label || hash.replace(/\W+/g, '_')}.png`), fullPage: true });
}

// Every control has a name a screen reader can say.
async function labelled(s) {
  const unnamed = await s.page.evaluate(() => [...document.querySelectorAll('main input, main select, main textarea, main button, nav a')]
    .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.textContent.trim())
    .map(el => el.outerHTML.slice(0, 80)));
  expect(!unnamed.length, `controls without a label: ${unnamed.join(' | ')}`);
}

// Text is readable: every visible text's contrast with its background is at least WCAG AA's
// 4.5:1.
async function readable(s) {
  const low = await s.page.evaluate(() => {
    const rgb = c => (c.match(/[\d.]+/g) || []).map(Number);
    const lum = ([r, g, b]) => {
      const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const background = el => {
      for (let e = el; e; e = e.parentElement) {
        const c = rgb(getComputedStyle(e).backgroundColor);
        if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3);
      }
      return [255, 255, 255];
    };
    const out = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let n = walker.nextNode(); n; n = walker.nextNode()) {
      const el = n.parentElement;
      if (!n.textContent.trim() || !el.checkVisibility() || el.closest('.sr, .u-legend')) continue;
      const style = getComputedStyle(el);
      const fg = rgb(style.color).slice(0, 3);
      const [a, b] = [lum(fg), lum(background(el))];
      const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
      if (ratio < 4.5 && !el.disabled) out.push(`${ratio.toFixed(2)}: ${n.textContent.trim().slice(0, 40)}`);
    }
    return out;
  });
  expect(!low.length, `text below 4.5:1 contrast: ${low.slice(0, 5).join(' | ')}`);
}

async function step(name, s, fn) {
  try {
    await fn();
    expect(!s.problems.length, s.problems.join('\n'));
    console.log(`ok   ${name}`);
  } catch (e) {
    failures.push(`${name}: ${e.message}`);
    console.log(`FAIL ${name}: ${e.message}`);
    await s.page.screenshot({ path: join(cfg.artifacts, `failed-${name.replace(/\W+/g, '_')}.png`), fullPage: true }).catch(() => {});
  }
  s.problems.length = 0;
}

async function logIn(s, key) {
  await s.page.goto(`${cfg.url}/ui/`);
  await s.page.waitForSelector('body[data-ready="#/login"]');
  // By keyboard: the key field has focus, Enter submits.
  await s.page.keyboard.type(key);
  await s.page.keyboard.press('Enter');
  await s.page.waitForFunction(() => document.body.dataset.ready && document.body.dataset.ready !== '#/login', null, { timeout: 15000 });
}

const text = s => s.page.locator('main').innerText();

// A wrong key: a clear error, no way in.
const stranger = await session('stranger');
await step('a wrong key shows a clear error', stranger, async () => {
  await stranger.page.goto(`${cfg.url}/ui/#/teams/${team}`);
  await stranger.page.waitForSelector('body[data-ready="#/login"]');
  await stranger.page.fill('#key', 'plinth_wrong_key');
  await stranger.page.click('button[type=submit]');
  const error = await stranger.page.waitForSelector('[role=alert]');
  expect((await error.innerText()).includes('not accepted'), await error.innerText());
  await labelled(stranger);
  await readable(stranger);
  await stranger.page.screenshot({ path: join(cfg.artifacts, 'login-wrong-key.png') });
});

// The team's maintainer.
const m = await session('maintainer');
await step('log in and see the team home', m, async () => {
  await logIn(m, cfg.keys.maintainer);
  await open(m, `#/teams/${team}`, 'team home');
  const t = await text(m);
  expect(t.includes(`${model} @ production`), 'the deployment is listed');
  expect(/p99 [\d.]+ ms/.test(t), 'a latency badge');
  expect(t.includes('drift: 1 firing'), 'a drift badge');
  expect(/live accuracy [\d.]+/.test(t), 'a live accuracy badge');
  expect(t.includes('age'), 'the open incident names age');
  expect(/Cost this month \(\d{4}-\d{2}\)/.test(t), 'this month\'s cost');
  expect((await m.page.locator('main table tbody tr').count()) > 50, 'models listed');
  await labelled(m);
  await readable(m);
});

await step('the model page shows versions, evaluations and fairness', m, async () => {
  await open(m, `#/teams/${team}/models/${model}`, 'model');
  const t = await text(m);
  for (const v of ['v1', 'v2', 'v3']) expect(t.includes(v), `version ${v}`);
  expect(t.includes('lightgbm'), 'the format');
  const cal = m.page.locator('figure[data-chart^="Calibration"]').first();
  expect(Number(await cal.getAttribute('data-points')) > 3, 'calibration points');
  expect(await m.page.locator('figure[data-chart^="Calibration"] canvas').count() > 0, 'a calibration chart drawn');
  expect(await m.page.locator('figure[data-chart="Selection rate by sex"]').count() > 0, 'fairness by sex');
  expect(t.includes('What served where'), 'the serving history');
  await labelled(m);
  await readable(m);
});

await step('the deployment page shows health, live accuracy, drift and the log', m, async () => {
  await open(m, `#/teams/${team}/deployments/${model}/production`, 'deployment (24 h)');
  const latency = m.page.locator('figure[data-chart^="Latency"]');
  expect(Number(await latency.getAttribute('data-points')) > 0, 'latency points from real traffic');
  expect(await latency.locator('canvas').count() === 1, 'the latency chart drawn');
  const age = m.page.locator('figure[data-chart="Distribution of age: reference and current"]');
  expect(await age.count() === 1, 'the drifted feature\'s distributions');
  expect(Number(await age.getAttribute('data-points')) > 2, 'drift bins');
  const t = await text(m);
  expect(/label coverage \d/.test(t), 'label coverage');
  expect(t.includes('Estimated by'), 'CBPE estimate shown');
  expect(t.includes('age_drift'), 'the alert');
  expect((await m.page.locator('table:has(caption:text("Prediction log sample")) tbody tr').count()) > 0, 'the prediction log');
  await labelled(m);
  await readable(m);
});

await step('30 days of health render', m, async () => {
  await m.page.evaluate(() => sessionStorage.setItem('plinth.range', '30d'));
  await open(m, `#/teams/${team}/deployments/${model}/production`, 'deployment (30 days)');
  const n = Number(await m.page.locator('figure[data-chart^="Throughput"]').getAttribute('data-points'));
  expect(n >= 200, `30 days of throughput points (${n})`);
  await m.page.evaluate(() => sessionStorage.setItem('plinth.range', '24h'));
});

await step('acknowledge and resolve the incident', m, async () => {
  await open(m, `#/teams/${team}/deployments/${model}/production`);
  await m.page.getByRole('button', { name: /^Acknowledge/ }).click();
  await m.page.waitForSelector('[role=status]:has-text("is now acknowledged")');
  await m.page.waitForFunction(() => !document.querySelector('.loading'));
  expect((await m.page.getByRole('button', { name: /^Acknowledge/ }).count()) === 0, 'acknowledged once');
  await m.page.getByRole('button', { name: /^Resolve/ }).click();
  await m.page.waitForSelector('[role=status]:has-text("is now resolved")');
});

await step('deploy a canary and widen it', m, async () => {
  await open(m, `#/teams/${team}/deployments/${model}/production`);
  await m.page.selectOption('#canary-version', '2');
  await m.page.fill('#canary-weight', '10');
  await m.page.getByRole('button', { name: 'Start canary' }).click();
  await m.page.waitForFunction(() => /v1 90%, v2 10%/.test(document.querySelector('#traffic')?.textContent || ''), null, { timeout: 10000 });
  await m.page.getByRole('button', { name: 'Widen v2 to 50 %' }).click();
  await m.page.waitForFunction(() => /v1 50%, v2 50%/.test(document.querySelector('#traffic')?.textContent || ''), null, { timeout: 10000 });
  await m.page.screenshot({ path: join(cfg.artifacts, 'canary-widened.png'), fullPage: true });
});

await step('roll back to the previous revision', m, async () => {
  await open(m, `#/teams/${team}/deployments/${model}/production`);
  await m.page.getByRole('button', { name: 'Roll back…' }).click();
  await m.page.getByRole('button', { name: 'Confirm rollback' }).click();
  await m.page.waitForFunction(() => /v1 90%, v2 10%/.test(document.querySelector('#traffic')?.textContent || ''), null, { timeout: 10000 });
  // The history (a section loaded after the page) names it.
  await m.page.waitForFunction(() => /roll ?back/i.test([...document.querySelectorAll('main table')].find(t => t.caption?.textContent === 'Revisions of this deployment')?.innerText || ''), null, { timeout: 10000 });
});

await step('the cost page shows statements, quotas and cost per model', m, async () => {
  await open(m, `#/teams/${team}/cost`, 'cost');
  const t = await text(m);
  expect(t.includes('Quota use') && t.includes('Predictions this month'), 'quota use');
  await m.page.waitForSelector('text=Per 1,000 predictions');
  expect((await m.page.locator('#month option').count()) >= 2, 'this month and last month');
  expect((await text(m)).includes('open'), 'this month\'s statement is open');
  // Last month's statement closed (the test's clock closed it).
  const last = await m.page.locator('#month option').nth(1).getAttribute('value');
  await m.page.selectOption('#month', last);
  await m.page.waitForFunction(month => document.querySelector('main').innerText.includes(`Statement ${month}`), last);
  await m.page.waitForSelector('text=closed');
  await labelled(m);
  await readable(m);
});

// A platform reviewer approves from the queue; production changes.
const r = await session('reviewer');
await step('approve a promotion from the review queue', r, async () => {
  await logIn(r, cfg.keys.reviewer);
  await open(r, '#/reviews', 'review queue');
  const t = await text(r);
  expect(t.includes(`${model} v3 → production`), 'the pending promotion');
  expect(t.includes('Automated checks') && t.includes('Difference from the version in production'), 'checks and difference');
  expect(await r.page.locator('figure[data-chart="Selection rate by sex"]').count() > 0, 'fairness in the review');
  await r.page.waitForSelector('text=roc auc on adult@1');
  await labelled(r);
  await readable(r);
  await r.page.fill(`#comment-${cfg.promotion}`, 'fair and accurate enough');
  await r.page.getByRole('button', { name: `Approve ${model} v3` }).click();
  const done = await r.page.waitForSelector('[role=status]');
  expect((await done.innerText()).includes('deployed'), await done.innerText());
});
await step('production changed after the approval', m, async () => {
  await open(m, `#/teams/${team}/deployments/${model}/production`);
  expect(/v3 100%/.test(await m.page.locator('#traffic').innerText()), 'v3 serves production');
});

// A viewer sees the deployment but no control the API would refuse them.
const v = await session('viewer');
await step('a viewer sees no traffic controls or incident actions', v, async () => {
  await logIn(v, cfg.keys.viewer);
  await open(v, `#/teams/${team}/deployments/${model}/production`);
  const t = await text(v);
  expect(t.includes('Health') && t.includes('Drift'), 'the deployment is shown');
  expect(!t.includes('Change traffic') && (await v.page.locator('#canary-version, button:has-text("Roll back")').count()) === 0, 'no traffic controls');
  expect((await v.page.getByRole('button', { name: /^(Acknowledge|Resolve)/ }).count()) === 0, 'no incident actions');
});

// The platform team.
const a = await session('admin');
await step('the platform page shows adoption, quality, business and delivery', a, async () => {
  await logIn(a, cfg.keys.admin);
  await open(a, '#/platform', 'platform');
  const t = await text(a);
  for (const s of ['Adoption', 'Quality', 'Business', 'Delivery (DORA)', 'Predictions this month', 'Deployment frequency']) expect(t.includes(s), s);
  expect(Number(await a.page.locator('figure[data-chart="Predictions per month"]').getAttribute('data-points')) >= 1, 'a predictions trend');
  await labelled(a);
  await readable(a);
});

// Another team's maintainer reaches none of this team's pages, by URL either.
const o = await session('outsider');
await step('another team cannot reach this team\'s pages', o, async () => {
  await logIn(o, cfg.keys.outsider);
  const nav = await o.page.locator('nav').innerText();
  expect(!nav.includes(team), 'the team is not in the navigation');
  for (const hash of [`#/teams/${team}`, `#/teams/${team}/models/${model}`, `#/teams/${team}/deployments/${model}/production`, `#/teams/${team}/cost`]) {
    await open(o, hash);
    const t = await text(o);
    expect(await o.page.locator('main [role=alert]').count() === 1, `${hash}: an error`);
    expect(!t.includes('Serving v') && !t.includes('lightgbm') && !t.includes('age_drift'), `${hash} shows nothing of the team`);
  }
  await open(o, '#/reviews');
  expect(!(await text(o)).includes(model), 'no review of another team');
  await open(o, '#/platform');
  expect((await text(o)).includes('for platform admins'), 'the platform page is for admins');
});

// The API reference renders the server's OpenAPI document, offline, without a key.
await step('the API reference at /docs renders every area', stranger, async () => {
  await stranger.page.goto(`${cfg.url}/docs`);
  await stranger.page.waitForSelector('body[data-ready="reference"]');
  const t = await stranger.page.locator('main').innerText();
  for (const s of ['POST /api/v1/deployments/{team}/{model}/{environment}/predict', 'POST /v2/models/{name}/infer', 'Schemas', 'Policy']) expect(t.includes(s), s);
  await labelled(stranger);
  await readable(stranger);
  await stranger.page.screenshot({ path: join(cfg.artifacts, 'api-reference.png') });
});

await browser.close();
for (const f of failures) console.log(`FAILED: ${f}`);
console.log(`TIMINGS ${JSON.stringify(timings)}`);
process.exit(failures.length ? 1 : 0);
