// The login page: an API key, checked against /whoami, kept for this browser tab only.

import { h, errorBox, clear } from '../dom.js';
import { logIn } from '../app.js';

export async function render() {
  const input = h('input#key', { type: 'password', name: 'key', autocomplete: 'off', required: true, 'aria-describedby': 'key-help' });
  const status = h('div', { 'aria-live': 'polite' });
  const form = h('form', {
    on: {
      submit: async ev => {
        ev.preventDefault();
        clear(status);
        const k = input.value.trim();
        if (!k) { clear(status, errorBox({ message: 'Enter an API key.', field: 'key' })); return; }
        try {
          await logIn(k);
          const next = sessionStorage.getItem('plinth.after-login') || '#/';
          sessionStorage.removeItem('plinth.after-login');
          location.hash = next === '#/login' ? '#/' : next;
        } catch (e) {
          const why = e.status === 401
            ? 'This API key was not accepted: it is unknown, revoked or expired. Ask a maintainer of your team for a key, or create one with `plinth key create`.'
            : e.message;
          clear(status, errorBox({ message: why }));
          input.select();
        }
      },
    },
  },
  h('label', { for: 'key' }, 'API key'),
  input,
  h('p#key-help.muted', 'The key is kept in this browser tab only (session storage) and sent to this server\'s API, nowhere else.'),
  h('button', { type: 'submit' }, 'Log in'), status);
  setTimeout(() => input.focus(), 0);
  return h('section.login', h('h1', 'Log in to Plinth'), form);
}
