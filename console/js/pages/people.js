// People: users, teams and roles (admins), and the caller's own API keys:
// create with scopes and expiry (the secret is shown once, here, and never
// again), revoke.
import { api, enc } from '../api.js';
import { h, table, when, errorBox } from '../dom.js';
import { can, session } from '../app.js';

const ROLES = ['viewer', 'operator', 'developer', 'admin'];

async function usersAndTeams(main) {
  const [{ users }, { teams }] = await Promise.all([api('GET', '/v1/users'), api('GET', '/v1/teams')]);
  const teamName = new Map(teams.map((t) => [t.id, t.name]));
  const msg = h('div', {});
  const uname = h('input', { id: 'user-name', placeholder: 'username' });
  const upass = h('input', { id: 'user-password', type: 'password', placeholder: 'at least 12 characters', autocomplete: 'new-password' });
  const uteam = h('select', { id: 'user-team' }, teams.map((t) => h('option', { value: t.id }, t.name)));
  const urole = h('select', { id: 'user-role' }, ROLES.map((r) => h('option', { value: r }, r)));
  const tname = h('input', { id: 'team-name', placeholder: 'team name' });
  const reload = () => { main.replaceChildren(); render(main); };
  main.append(
    h('h2', {}, 'Users'),
    table(['username', 'role', 'team', 'status', 'created'], users, (u) => h('tr', {},
      h('td', {}, u.username), h('td', {}, u.role), h('td', {}, teamName.get(u.team_id) || u.team_id),
      h('td', {}, u.disabled ? 'disabled' : 'active'), h('td', {}, when(u.created_at)))),
    h('form', {
      class: 'card inline', id: 'user-create',
      onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          await api('POST', '/v1/users', { username: uname.value, password: upass.value, team_id: uteam.value, role: urole.value });
          upass.value = '';
          reload();
        } catch (e) { msg.replaceChildren(errorBox(e)); }
      },
    }, h('label', {}, 'Username', uname), h('label', {}, 'Password', upass), h('label', {}, 'Team', uteam),
    h('label', {}, 'Role', urole), h('button', { type: 'submit' }, 'Add user')),
    h('h2', {}, 'Teams'),
    table(['name', 'id', 'created'], teams, (t) => h('tr', {}, h('td', {}, t.name), h('td', { class: 'mono' }, t.id),
      h('td', {}, when(t.created_at)))),
    h('form', {
      class: 'card inline', id: 'team-create',
      onsubmit: async (ev) => {
        ev.preventDefault();
        try { await api('POST', '/v1/teams', { name: tname.value }); reload(); } catch (e) { msg.replaceChildren(errorBox(e)); }
      },
    }, h('label', {}, 'Team', tname), h('button', { type: 'submit' }, 'Add team')),
    msg);
}

function keyForm(onCreated) {
  const name = h('input', { id: 'key-name', placeholder: 'ci-runner' });
  const expires = h('input', { id: 'key-expires', type: 'datetime-local' });
  const boxes = session().permissions.map((p) => h('label', { class: 'scope' },
    h('input', { type: 'checkbox', value: p, class: 'key-scope', 'data-scope': p }), p));
  const msg = h('div', { id: 'key-msg' });
  return h('form', {
    class: 'card', id: 'key-create',
    onsubmit: async (ev) => {
      ev.preventDefault();
      msg.replaceChildren();
      const scopes = boxes.map((b) => b.firstChild).filter((c) => c.checked).map((c) => c.value);
      const body = { name: name.value, scopes };
      if (expires.value) body.expires_at = new Date(expires.value).toISOString().replace(/\.\d+Z$/, 'Z');
      try {
        const k = await api('POST', '/v1/keys', body);
        const secret = h('code', { id: 'key-secret' }, k.key);
        k.key = null;
        msg.replaceChildren(h('div', { class: 'secret' },
          h('strong', {}, 'Copy this key now: it is shown once and cannot be shown again.'), h('br'), secret,
          ' ', h('button', { type: 'button', class: 'secondary', onclick: (e2) => { secret.remove(); e2.target.remove(); } }, 'Done')));
        onCreated();
      } catch (e) { msg.replaceChildren(errorBox(e)); }
    },
  }, h('h2', {}, 'New API key'),
  h('div', { class: 'row' }, h('label', {}, 'Name', name), h('label', {}, 'Expires (local time, empty: never)', expires)),
  h('div', { class: 'row' }, boxes), h('button', { type: 'submit', id: 'key-create-button' }, 'Create key'), msg);
}

async function keys(main) {
  const list = h('div', { id: 'key-list' });
  const draw = async () => {
    try {
      const { keys: ks } = await api('GET', '/v1/keys');
      list.replaceChildren(table(['name', 'id', 'scopes', 'created', 'expires', 'last used', 'status', ''], ks, (k) => h('tr', { 'data-key': k.id },
        h('td', {}, k.name), h('td', { class: 'mono' }, k.id), h('td', {}, k.scopes.join(' ')), h('td', {}, when(k.created_at)),
        h('td', {}, k.expires_at ? when(k.expires_at) : 'never'), h('td', {}, when(k.last_used_at)),
        h('td', { class: 'key-status' }, k.revoked_at ? `revoked ${when(k.revoked_at)}` : 'live'),
        h('td', {}, k.revoked_at ? '' : h('button', {
          type: 'button', class: 'danger key-revoke',
          onclick: async () => {
            try { await api('DELETE', `/v1/keys/${enc(k.id)}`); await draw(); } catch (e) { list.append(errorBox(e)); }
          },
        }, 'Revoke')))));
    } catch (e) { list.replaceChildren(errorBox(e)); }
  };
  await draw();
  main.append(h('h2', {}, 'Your API keys'), keyForm(draw), list);
}

export async function render(main) {
  main.append(h('h1', {}, 'People and keys'));
  if (can('admin:users')) await usersAndTeams(main);
  if (can('keys:manage')) await keys(main);
}
