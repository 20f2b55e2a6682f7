// Tasks: the list and a create form; one task's live transcript (text and
// tool calls, from GET /v1/tasks/{id}/events as SSE over fetch), Approve
// and Deny for pending tool calls, cancel.  Model output, tool input and
// tool output are text nodes only.
import { api, sse, enc } from '../api.js';
import { h, table, kv, when, errorBox } from '../dom.js';
import { can, go } from '../app.js';

const ENDED = new Set(['succeeded', 'failed', 'cancelled', 'budget_exceeded']);

function createForm() {
  const prompt = h('textarea', { id: 'task-prompt', placeholder: 'What should the model do?' });
  const provider = h('input', { id: 'task-provider', placeholder: 'provider name' });
  const model = h('input', { id: 'task-model', placeholder: 'model' });
  const approvals = h('input', { id: 'task-approvals', placeholder: 'bash, file_write' });
  const msg = h('div', {});
  return h('form', {
    class: 'card', id: 'task-create',
    onsubmit: async (ev) => {
      ev.preventDefault();
      const body = { prompt: prompt.value, provider: provider.value, model: model.value };
      const ap = approvals.value.split(',').map((x) => x.trim()).filter(Boolean);
      if (ap.length) body.approvals = ap;
      try {
        const t = await api('POST', '/v1/tasks', body);
        go(`#/tasks/${enc(t.id)}`);
      } catch (e) { msg.replaceChildren(errorBox(e)); }
    },
  }, h('h2', {}, 'New task'), prompt,
  h('div', { class: 'row' }, h('label', {}, 'Provider', provider), h('label', {}, 'Model', model),
    h('label', {}, 'Tools that need approval', approvals), h('button', { type: 'submit' }, 'Start')), msg);
}

async function listPage(main) {
  const { tasks } = await api('GET', '/v1/tasks');
  main.append(h('h1', {}, 'Tasks'));
  if (can('tasks:create')) main.append(createForm());
  main.append(table(['task', 'state', 'prompt', 'model', 'created'], tasks, (t) => h('tr', {},
    h('td', {}, h('a', { href: `#/tasks/${enc(t.id)}`, class: 'task-link' }, t.id)), h('td', {}, t.state),
    h('td', {}, String(t.prompt).slice(0, 120)), h('td', {}, `${t.provider}/${t.model}`),
    h('td', {}, when(t.created_at)))));
}

function pretty(v) {
  if (typeof v === 'string') return v;
  try { return JSON.stringify(v, null, 2); } catch (e) { return String(v); }
}

function approvalCard(taskId, d, resolved) {
  const status = h('span', { class: 'approval-status' }, resolved || 'pending');
  const buttons = h('span', {});
  const decide = async (decision) => {
    try {
      await api('POST', `/v1/tasks/${enc(taskId)}/approvals/${enc(d.approval_id)}`, { decision });
      buttons.replaceChildren();
    } catch (e) { buttons.append(errorBox(e)); }
  };
  if (!resolved && can('tasks:approve')) {
    buttons.append(
      h('button', { type: 'button', class: 'approve', onclick: () => decide('approve') }, 'Approve'), ' ',
      h('button', { type: 'button', class: 'danger deny', onclick: () => decide('deny') }, 'Deny'));
  }
  return h('div', { class: 'approval', 'data-approval': d.approval_id },
    h('strong', {}, 'Approval needed: '), h('span', { class: 'mono' }, d.tool), ' ', status,
    h('pre', {}, pretty(d.input)), buttons);
}

function transcript(taskId, signal, onState) {
  const box = h('div', { class: 'transcript', id: 'transcript' });
  const cards = new Map();
  let textBlock = null;
  const add = (cls, ...kids) => {
    const el = h('div', { class: cls }, ...kids);
    box.append(el);
    return el;
  };
  (async () => {
    try {
      const resp = await api('GET', `/v1/tasks/${enc(taskId)}/events`, undefined,
        { raw: true, signal, headers: { Accept: 'text/event-stream' } });
      for await (const ev of sse(resp)) {
        const e = ev.data && ev.data.data !== undefined ? ev.data.data : ev.data;
        const type = (ev.data && ev.data.type) || ev.event;
        if (type === 'text') {
          if (!textBlock) textBlock = add('text', h('pre', {}));
          textBlock.firstChild.append(String(e.delta ?? ''));
          continue;
        }
        textBlock = null;
        if (type === 'message') add('message', h('strong', {}, `${e.role}: `), h('pre', {}, pretty(e.content)));
        else if (type === 'tool_call') add('tool_call', h('strong', {}, 'tool call '), h('span', { class: 'mono' }, e.tool), h('pre', {}, pretty(e.input)));
        else if (type === 'tool_result') add('tool_result', h('strong', {}, e.is_error ? 'tool error' : 'tool result'), h('pre', {}, pretty(e.output)));
        else if (type === 'approval_required') cards.set(e.approval_id, box.appendChild(approvalCard(taskId, e)));
        else if (type === 'approval_resolved') {
          const c = cards.get(e.approval_id);
          if (c) {
            c.querySelector('.approval-status').textContent = e.decision;
            c.lastChild.replaceChildren();
          }
          add('state', `${e.tool || 'call'} ${e.decision}${e.decided_by ? ` by ${e.decided_by}` : ''}`);
        } else if (type === 'state') {
          add('state', h('strong', {}, 'state: '), e.state, e.error ? [' — ', e.error] : '', e.result ? h('pre', {}, pretty(e.result)) : '');
          onState(e.state);
        } else if (type === 'usage') {
          onState(null, e);
        }
      }
    } catch (err) {
      if (err.name !== 'AbortError') box.append(errorBox(err));
    }
  })();
  return box;
}

async function detailPage(main, id, signal) {
  const t = await api('GET', `/v1/tasks/${enc(id)}`);
  const state = h('span', { id: 'task-state' }, t.state);
  const usage = h('span', { id: 'task-usage' }, `${t.usage.turns} turns, ${t.usage.tool_calls} tool calls`);
  const msg = h('div', {});
  const cancel = h('button', {
    type: 'button', class: 'danger', id: 'task-cancel', hidden: !can('tasks:cancel') || ENDED.has(t.state),
    onclick: async () => {
      try { await api('POST', `/v1/tasks/${enc(id)}/cancel`); } catch (e) { msg.replaceChildren(errorBox(e)); }
    },
  }, 'Cancel task');
  const onState = (s, u) => {
    if (s) {
      state.textContent = s;
      if (ENDED.has(s)) cancel.hidden = true;
    }
    if (u) usage.textContent = `${u.turns} turns, ${u.tool_calls} tool calls`;
  };
  main.append(h('h1', {}, 'Task ', h('span', { class: 'mono' }, t.id)),
    h('div', { class: 'card' }, kv([
      ['state', state], ['prompt', h('pre', { id: 'task-prompt-text' }, t.prompt)], ['model', `${t.provider}/${t.model}`],
      ['sandbox', t.sandbox_id ? h('a', { href: `#/sandboxes/${enc(t.sandbox_id)}` }, t.sandbox_id) : '—'],
      ['tools', (t.tools || []).join(', ')], ['need approval', (t.approvals || []).join(', ') || '—'],
      ['usage', usage], ['created by', t.created_by],
    ]), cancel, msg),
    h('h2', {}, 'Transcript'), transcript(id, signal, onState));
}

export async function render(main, ctx) {
  if (ctx.id) return detailPage(main, ctx.id, ctx.signal);
  return listPage(main);
}
