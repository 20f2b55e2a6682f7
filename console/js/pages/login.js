// The login page, with the first-run hint.
import { api } from '../api.js';
import { h, errorBox } from '../dom.js';
import { go, setSession } from '../app.js';

export async function render(main) {
  const user = h('input', { name: 'username', id: 'username', autocomplete: 'username', required: true });
  const pass = h('input', { name: 'password', id: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const msg = h('div', { id: 'login-error' });
  const form = h('form', {
    id: 'login-form',
    onsubmit: async (ev) => {
      ev.preventDefault();
      msg.replaceChildren();
      try {
        const s = await api('POST', '/v1/sessions', { username: user.value, password: pass.value });
        pass.value = '';
        setSession(s);
        go('#/overview');
      } catch (e) {
        pass.value = '';
        msg.replaceChildren(errorBox(e));
      }
    },
  },
  h('label', {}, 'Username', user),
  h('label', {}, 'Password', pass),
  h('button', { type: 'submit', id: 'login-button' }, 'Log in'),
  msg);
  main.append(h('div', { class: 'login card' },
    h('h1', {}, 'Log in to ForgeBox'),
    form,
    h('p', { class: 'muted', id: 'first-run' },
      'First run? The user "admin" was created by ', h('code', {}, 'forgebox admin init'),
      ', which printed its password once (or took it from FORGEBOX_FIRST_PASSWORD). ',
      'Other people get their password from an administrator; API keys are managed here after logging in.')));
  user.focus();
}
