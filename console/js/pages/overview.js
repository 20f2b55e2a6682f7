// Overview: health, live sandboxes, running tasks, pending approvals,
// capacity (admins: from /metrics) and recent denials (admins: the audit
// log), refreshed every few seconds while the page is open.
import { api, auditNewest, enc } from '../api.js';
import { h, table, when, errorBox } from '../dom.js';
import { can, isAdmin } from '../app.js';

const ACTIVE = new Set(['queued', 'running', 'waiting_approval']);

async function section(title, id, fn) {
  const body = h('div', {});
  try {
    await fn(body);
  } catch (e) {
    body.replaceChildren(errorBox(e));
  }
  return h('div', { class: 'card', id }, h('h2', {}, title), body);
}

async function pendingApprovals(tasks) {
  const out = [];
  for (const t of tasks.filter((x) => x.state === 'waiting_approval')) {
    const a = await api('GET', `/v1/tasks/${enc(t.id)}/approvals`);
    for (const ap of a.approvals) if (ap.state === 'pending') out.push({ task: t, ap });
  }
  return out;
}

function metricLines(text, name) {
  return text.split('\n').filter((l) => l.startsWith(name + '{') || l.startsWith(name + ' '));
}

async function draw(main) {
  const cards = [];
  cards.push(await section('Health', 'ov-health', async (b) => {
    const hz = await api('GET', '/healthz');
    b.append(h('span', { class: hz.status === 'ok' ? 'pill good' : 'pill bad' }, hz.status));
  }));
  if (can('sandboxes:read')) {
    cards.push(await section('Live sandboxes', 'ov-sandboxes', async (b) => {
      const { sandboxes } = await api('GET', '/v1/sandboxes');
      b.append(h('p', {}, `${sandboxes.length} running`),
        table(['id', 'backend', 'expires'], sandboxes.slice(0, 8), (s) => h('tr', {},
          h('td', {}, h('a', { href: `#/sandboxes/${enc(s.id)}` }, s.id)), h('td', {}, s.backend),
          h('td', {}, when(s.expires_at)))));
    }));
  }
  if (can('tasks:read')) {
    let tasks = [];
    cards.push(await section('Running tasks', 'ov-tasks', async (b) => {
      tasks = (await api('GET', '/v1/tasks')).tasks.filter((t) => ACTIVE.has(t.state));
      b.append(table(['task', 'state', 'prompt'], tasks.slice(0, 8), (t) => h('tr', {},
        h('td', {}, h('a', { href: `#/tasks/${enc(t.id)}` }, t.id)), h('td', {}, t.state),
        h('td', {}, String(t.prompt).slice(0, 80)))));
    }));
    cards.push(await section('Pending approvals', 'ov-approvals', async (b) => {
      const pend = await pendingApprovals(tasks);
      b.append(table(['task', 'tool', 'expires'], pend, ({ task, ap }) => h('tr', {},
        h('td', {}, h('a', { href: `#/tasks/${enc(task.id)}` }, task.id)), h('td', {}, ap.tool),
        h('td', {}, when(ap.expires_at)))));
    }));
  }
  if (isAdmin()) {
    cards.push(await section('Capacity', 'ov-capacity', async (b) => {
      const resp = await api('GET', '/metrics', undefined, { raw: true });
      const text = await resp.text();
      // Live sandboxes, and the warm pools: ready, hits and misses per backend.
      const lines = ['forgebox_sandboxes_active', 'forgebox_pool_ready', 'forgebox_pool_hits_total',
        'forgebox_pool_misses_total'].flatMap((name) => metricLines(text, name));
      b.append(lines.length ? h('pre', {}, lines.join('\n')) : h('p', { class: 'muted' }, 'no sandbox metrics yet'));
    }));
    cards.push(await section('Recent denials (24 h)', 'ov-denials', async (b) => {
      const since = new Date(Date.now() - 86400000).toISOString().replace(/\.\d+Z$/, 'Z');
      const { entries } = await auditNewest(`outcome=denied&since=${enc(since)}`, 10, 20);
      const recent = entries.reverse();
      b.append(table(['time', 'actor', 'event', 'action', 'reason'], recent, (e) => h('tr', {},
        h('td', {}, when(e.ts)), h('td', {}, e.actor), h('td', {}, e.event), h('td', {}, e.action),
        h('td', {}, e.reason))));
    }));
  }
  main.replaceChildren(h('h1', {}, 'Overview'), h('div', { class: 'grid' }, cards));
}

export async function render(main, ctx) {
  await draw(main);
  const timer = setInterval(() => { draw(main).catch(() => {}); }, 5000);
  ctx.signal.addEventListener('abort', () => clearInterval(timer));
}
