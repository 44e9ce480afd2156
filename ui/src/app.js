// The dashboard's shell: login, navigation and the hash router. Each page is a module under
// pages/ whose `render(params, session)` answers the page's node once its main content is in.

import { api, key, setKey, forget, ApiError } from './api.js';
import { h, clear, errorBox } from './dom.js';

const routes = [
  [/^#\/login$/, () => import('./pages/login.js'), 'Log in'],
  [/^#\/teams\/([^/]+)$/, () => import('./pages/team.js'), 'Team'],
  [/^#\/teams\/([^/]+)\/models\/([^/]+)$/, () => import('./pages/model.js'), 'Model'],
  [/^#\/teams\/([^/]+)\/deployments\/([^/]+)\/([^/]+)$/, () => import('./pages/deployment.js'), 'Deployment'],
  [/^#\/teams\/([^/]+)\/cost$/, () => import('./pages/cost.js'), 'Cost'],
  [/^#\/reviews$/, () => import('./pages/reviews.js'), 'Review queue'],
  [/^#\/platform$/, () => import('./pages/platform.js'), 'Platform'],
  [/^#\/?$/, () => import('./pages/home.js'), 'Home'],
];

// Who is logged in: the key's principal, memberships and platform role.
let session = null;

export async function logIn(k) {
  const me = await api('/whoami', { token: k });
  setKey(k);
  session = makeSession(me);
  return session;
}

export function logOut() {
  forget();
  session = null;
  location.hash = '#/login';
}

function makeSession(me) {
  const roles = Object.fromEntries(me.memberships.map(m => [m.team, m.role]));
  const rank = { viewer: 1, developer: 2, maintainer: 3 };
  const platform = me.principal.platform_role;
  return {
    me, platform,
    isAdmin: platform === 'admin',
    isReviewer: platform === 'reviewer' || platform === 'admin',
    teams: me.memberships.map(m => m.team),
    role: team => roles[team] || (platform === 'admin' ? 'admin' : null),
    // At least `role` in `team` (platform admins may do what maintainers may).
    can: (team, role) => platform === 'admin' || (rank[roles[team]] || 0) >= rank[role],
  };
}

function nav(current) {
  const items = [];
  if (session) {
    for (const t of session.teams) items.push([`#/teams/${encodeURIComponent(t)}`, `Team ${t}`], [`#/teams/${encodeURIComponent(t)}/cost`, `Cost · ${t}`]);
    items.push(['#/reviews', 'Review queue']);
    if (session.isAdmin) items.push(['#/platform', 'Platform']);
  }
  clear(document.getElementById('nav'), h('ul', items.map(([href, text]) =>
    h('li', h('a', { href, 'aria-current': current === href ? 'page' : null }, text)))));
  clear(document.getElementById('who'), session ? [
    h('span', `${session.me.principal.name}${session.platform ? ` (${session.platform})` : ''}`),
    h('button', { type: 'button', on: { click: logOut } }, 'Log out'),
  ] : []);
}

let generation = 0;

async function route() {
  const hash = location.hash || '#/';
  const mine = ++generation;
  const main = document.getElementById('main');
  delete document.body.dataset.ready;
  // In-page links (the skip link's #main) are no route.
  if (hash !== '#/' && !hash.startsWith('#/')) {
    main.focus();
    return;
  }
  if (!session && key() && hash !== '#/login') {
    try {
      session = makeSession(await api('/whoami'));
    } catch (e) {
      if (mine !== generation) return;
      // Only a refused key is forgotten: a server that is down keeps the session.
      if (!(e instanceof ApiError) || e.status !== 401) { clear(main, errorBox(e)); return; }
      forget();
    }
    if (mine !== generation) return;
  }
  if (!session && hash !== '#/login') {
    sessionStorage.setItem('plinth.after-login', hash);
    location.replace('#/login');
    return;
  }
  const found = routes.find(([re]) => re.test(hash));
  nav(hash);
  if (!found) {
    clear(main, h('h1', 'Not found'), h('p', 'No such page. ', h('a', { href: '#/' }, 'Home')));
    document.body.dataset.ready = 'not-found';
    return;
  }
  const [re, load, title] = found;
  clear(main, h('p.muted.loading', 'Loading…'));
  try {
    const params = hash.match(re).slice(1).map(decodeURIComponent);
    document.title = `${[title, ...params].join(' · ')} — Plinth`;
    const page = await load();
    const node = await page.render(params, session);
    if (mine !== generation) return;
    clear(main, takeFlash(), node);
  } catch (e) {
    if (mine !== generation) return;
    if (e instanceof ApiError && e.status === 401) { logOut(); return; }
    clear(main, h('h1', title), errorBox(e));
  }
  // A redraw after a change keeps the focus where it was; a new page moves it to the content.
  if (!redrawing) main.focus({ preventScroll: true });
  redrawing = false;
  // When the page's main content was in, in ms since the navigation began (the browser tests'
  // timing).
  document.body.dataset.readyAt = String(Math.round(performance.now()));
  document.body.dataset.ready = hash;
}

// Pages ask the router to draw the current page again after a change they made, with a message
// saying what changed (shown at the top of the redrawn page, announced politely).
let flash = null;
let redrawing = false;
export function refresh(message) {
  flash = message || null;
  redrawing = true;
  route();
}
function takeFlash() {
  const m = flash;
  flash = null;
  return m ? h('p.notice', { role: 'status' }, m) : null;
}

window.addEventListener('hashchange', route);
route();
