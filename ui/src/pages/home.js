// Home: the teams the key belongs to (a single team goes straight to its page).

import { h, table, link } from '../dom.js';
import { all } from '../api.js';

export async function render(_params, session) {
  if (session.teams.length === 1 && !session.isAdmin) {
    location.replace(`#/teams/${encodeURIComponent(session.teams[0])}`);
    return h('p.muted', 'Opening your team…');
  }
  const teams = await all('/teams');
  return h('section', h('h1', 'Teams'),
    table([
      { label: 'Team', get: t => link(`#/teams/${encodeURIComponent(t.name)}`, t.display_name || t.name) },
      { label: 'Your role', get: t => t.your_role || (session.isAdmin ? 'platform admin' : '–') },
      { label: 'Description', get: t => t.description || '' },
    ], teams, { empty: 'You belong to no team yet. A platform admin adds members with `plinth member add`.' }));
}
