// app.js - the console's shell: who is logged in, the navigation (each
// link shown only to roles that can use its page; the API enforces it
// anyway), and the router (#/page/id).  Pages are modules under pages/.

import { api, setCsrf, whenLoggedOut } from './api.js';
import { h, errorBox } from './dom.js';

const pages = {
  login: () => import('./pages/login.js'),
  overview: () => import('./pages/overview.js'),
  sandboxes: () => import('./pages/sandboxes.js'),
  tasks: () => import('./pages/tasks.js'),
  people: () => import('./pages/people.js'),
  audit: () => import('./pages/audit.js'),
  settings: () => import('./pages/settings.js'),
};

const state = { session: null, perms: new Set(), live: null };

export function can(perm) { return state.perms.has(perm); }
export function isAdmin() { return Boolean(state.session && state.session.user.role === 'admin'); }
export function session() { return state.session; }

export function setSession(s) {
  state.session = s;
  state.perms = new Set(s ? s.permissions : []);
  setCsrf(s ? s.csrf_token : null);
  const nav = document.getElementById('nav');
  nav.hidden = !s;
  for (const a of nav.querySelectorAll('a')) {
    const perm = a.dataset.perm;
    a.hidden = Boolean(perm && !can(perm)) || Boolean(a.dataset.admin && !isAdmin());
  }
  document.getElementById('who').textContent = s ? `${s.user.username} (${s.user.role})` : '';
  document.getElementById('logout').hidden = !s;
}

export function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

async function route() {
  if (state.live) state.live.abort(); // stop the previous page's streams and timers
  const live = new AbortController();
  state.live = live;
  const main = document.getElementById('main');
  const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  let name = parts[0] || 'overview';
  if (!state.session) name = 'login';
  else if (name === 'login' || !pages[name]) name = 'overview';
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.page === name);
  document.body.dataset.page = name;
  try {
    const mod = await pages[name]();
    if (live.signal.aborted) return;
    main.replaceChildren();
    await mod.render(main, { id: parts[1] || null, signal: live.signal });
  } catch (e) {
    if (live.signal.aborted || (e && e.name === 'AbortError')) return;
    main.replaceChildren(errorBox(e));
  }
}

async function logout() {
  try { await api('DELETE', '/v1/sessions/current'); } catch (e) { /* gone already */ }
  setSession(null);
  go('#/login');
}

async function boot() {
  whenLoggedOut(() => {
    if (state.session) {
      setSession(null);
      go('#/login');
    }
  });
  document.getElementById('logout').addEventListener('click', logout);
  window.addEventListener('hashchange', route);
  try {
    setSession(await api('GET', '/v1/sessions/current'));
  } catch (e) {
    setSession(null);
  }
  await route();
  document.body.dataset.ready = '1';
}

boot();

export { h };
