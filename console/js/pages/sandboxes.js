// Sandboxes: the list (with a filter) and a create form; one sandbox's
// detail with a command box whose output streams live (SSE over fetch), a
// file browser (list, download, upload) and kill.  Output and file names are
// inserted as text nodes only.
import { api, sse, enc } from '../api.js';
import { h, table, kv, when, errorBox, download } from '../dom.js';
import { can, go } from '../app.js';

function listPage(main, sandboxes) {
  const filter = h('input', { id: 'sb-filter', placeholder: 'filter by id or backend', type: 'search' });
  const tbody = h('div', {});
  const draw = () => {
    const f = filter.value.trim().toLowerCase();
    const rows = sandboxes.filter((s) => !f || s.id.toLowerCase().includes(f) || s.backend.includes(f));
    tbody.replaceChildren(table(['id', 'backend', 'memory', 'vCPUs', 'created', 'expires'], rows, (s) => h('tr', {},
      h('td', {}, h('a', { href: `#/sandboxes/${enc(s.id)}`, class: 'sb-link' }, s.id)), h('td', {}, s.backend),
      h('td', {}, `${s.memory_mib} MiB`), h('td', {}, s.vcpus), h('td', {}, when(s.created_at)),
      h('td', {}, when(s.expires_at)))));
  };
  filter.addEventListener('input', draw);
  draw();
  main.append(h('h1', {}, 'Sandboxes'));
  if (can('sandboxes:create')) main.append(createForm());
  main.append(h('div', { class: 'row' }, filter), tbody);
}

function createForm() {
  const backend = h('select', { id: 'sb-backend' }, h('option', { value: '' }, 'default'),
    h('option', { value: 'jail' }, 'jail'), h('option', { value: 'vm' }, 'vm'));
  const mem = h('input', { id: 'sb-memory', type: 'number', min: 64, placeholder: 'default' });
  const ttl = h('input', { id: 'sb-ttl', type: 'number', min: 1, placeholder: 'default' });
  const msg = h('div', {});
  return h('form', {
    class: 'card inline', id: 'sb-create',
    onsubmit: async (ev) => {
      ev.preventDefault();
      const body = {};
      if (backend.value) body.backend = backend.value;
      if (mem.value) body.memory_mib = Number(mem.value);
      if (ttl.value) body.ttl_s = Number(ttl.value);
      msg.replaceChildren(h('span', { class: 'muted' }, 'starting…'));
      try {
        const s = await api('POST', '/v1/sandboxes', body);
        go(`#/sandboxes/${enc(s.id)}`);
      } catch (e) {
        msg.replaceChildren(errorBox(e));
      }
    },
  }, h('label', {}, 'Backend', backend), h('label', {}, 'Memory (MiB)', mem), h('label', {}, 'TTL (s)', ttl),
  h('button', { type: 'submit', id: 'sb-create-button' }, 'New sandbox'), msg);
}

// ---- one sandbox ------------------------------------------------------------------------------

function commandBox(id, signal) {
  const cmd = h('input', { id: 'cmd', class: 'mono', size: 60, placeholder: 'echo hello' });
  const out = h('pre', { class: 'out', id: 'cmd-output', 'aria-live': 'polite' });
  const status = h('span', { id: 'cmd-status', class: 'muted' });
  let current = null;
  const stop = h('button', {
    type: 'button', class: 'secondary', id: 'cmd-stop', disabled: true,
    onclick: async () => {
      if (current) await api('DELETE', `/v1/sandboxes/${enc(id)}/execs/${enc(current)}`).catch(() => {});
    },
  }, 'Stop');
  const form = h('form', {
    class: 'inline', id: 'cmd-form',
    onsubmit: async (ev) => {
      ev.preventDefault();
      out.replaceChildren();
      status.textContent = 'running…';
      stop.disabled = false;
      try {
        const resp = await api('POST', `/v1/sandboxes/${enc(id)}/exec`, { cmd: ['bash', '-c', cmd.value] },
          { raw: true, signal, headers: { Accept: 'text/event-stream' } });
        for await (const ev2 of sse(resp)) {
          if (ev2.event === 'exec') current = ev2.data.exec_id;
          else if (ev2.event === 'stdout' || ev2.event === 'stderr') {
            out.append(h('span', { class: ev2.event }, ev2.data.data));
            out.scrollTop = out.scrollHeight;
          } else if (ev2.event === 'exit') {
            const d = ev2.data;
            status.textContent = d.error ? `failed: ${d.error}` : `exit ${d.exit_code === null ? `signal ${d.signal}` : d.exit_code}`;
            status.className = d.exit_code === 0 ? 'ok' : 'error';
            status.id = 'cmd-status';
          }
        }
      } catch (e) {
        if (e.name !== 'AbortError') status.replaceChildren(errorBox(e));
      } finally {
        current = null;
        stop.disabled = true;
      }
    },
  }, cmd, h('button', { type: 'submit', id: 'cmd-run' }, 'Run'), stop, status);
  return h('div', { class: 'card' }, h('h2', {}, 'Command'), form, out);
}

// find prints one line per entry (a name holding a newline shows as two).
function parseListing(text) {
  return text.split('\n').filter(Boolean).map((rec) => {
    const [type, size, ...rest] = rec.split('\t');
    const path = rest.join('\t');
    return { type, size: Number(size), path, name: path.slice(path.lastIndexOf('/') + 1) };
  }).sort((a, b) => (a.type === 'd') - (b.type === 'd') || a.name.localeCompare(b.name)).reverse();
}

async function runQuiet(id, argv) {
  const r = await api('POST', `/v1/sandboxes/${enc(id)}/exec`, { cmd: argv });
  return r;
}

function fileBrowser(id) {
  const dir = h('input', { id: 'fb-dir', class: 'mono', value: '/workspace', size: 40 });
  const list = h('div', { id: 'fb-list' });
  const msg = h('div', { id: 'fb-msg' });
  const upload = h('input', { id: 'fb-upload', type: 'file' });
  const refresh = async (keepMessage) => {
    if (keepMessage !== true) msg.replaceChildren();
    try {
      const r = await runQuiet(id, ['find', dir.value, '-mindepth', '1', '-maxdepth', '1', '-printf', '%y\\t%s\\t%p\\n']);
      if (r.exit_code !== 0) throw new Error(r.stderr || `find exited ${r.exit_code}`);
      const rows = parseListing(r.stdout);
      list.replaceChildren(table(['', 'name', 'size', ''], rows, (f) => h('tr', { class: 'fb-row' },
        h('td', {}, f.type === 'd' ? 'dir' : 'file'),
        h('td', { class: 'mono fb-name' }, f.type === 'd'
          ? h('a', { href: '#', onclick: (ev) => { ev.preventDefault(); dir.value = f.path; refresh(); } }, f.name)
          : f.name),
        h('td', {}, f.type === 'd' ? '' : String(f.size)),
        h('td', {}, f.type === 'f' ? h('button', {
          type: 'button', class: 'secondary fb-download',
          onclick: async () => {
            try {
              const resp = await api('GET', `/v1/sandboxes/${enc(id)}/files?path=${enc(f.path)}`, undefined, { raw: true });
              download(f.name, await resp.blob());
            } catch (e) { msg.replaceChildren(errorBox(e)); }
          },
        }, 'Download') : ''))));
    } catch (e) {
      msg.replaceChildren(errorBox(e));
    }
  };
  const up = h('form', {
    class: 'inline', id: 'fb-upload-form',
    onsubmit: async (ev) => {
      ev.preventDefault();
      const file = upload.files[0];
      if (!file) return;
      try {
        const path = `${dir.value.replace(/\/+$/, '')}/${file.name}`;
        await api('PUT', `/v1/sandboxes/${enc(id)}/files?path=${enc(path)}`, file);
        upload.value = '';
        msg.replaceChildren(h('span', { class: 'ok', id: 'fb-uploaded' }, `uploaded ${file.name}`));
        await refresh(true);
      } catch (e) { msg.replaceChildren(errorBox(e)); }
    },
  }, upload, h('button', { type: 'submit', id: 'fb-upload-button' }, 'Upload'));
  const bar = h('form', { class: 'inline', onsubmit: (ev) => { ev.preventDefault(); refresh(); } },
    h('label', {}, 'Directory', dir), h('button', { type: 'submit', id: 'fb-refresh' }, 'List'));
  refresh();
  return h('div', { class: 'card', id: 'files' }, h('h2', {}, 'Files'), bar, up, msg, list);
}

async function detailPage(main, id, signal) {
  const s = await api('GET', `/v1/sandboxes/${enc(id)}`);
  const ttl = h('span', { id: 'sb-ttl-left' });
  const tick = () => {
    const left = Math.max(0, Math.round((new Date(s.expires_at) - Date.now()) / 1000));
    ttl.textContent = `${left} s left`;
  };
  tick();
  const timer = setInterval(tick, 1000);
  signal.addEventListener('abort', () => clearInterval(timer));
  const net = s.network && s.network.allow ? s.network.allow.join(', ') : 'none';
  main.append(h('h1', {}, 'Sandbox ', h('span', { class: 'mono', id: 'sb-id' }, s.id)),
    h('div', { class: 'card' }, kv([
      ['team', s.team_id], ['backend', s.backend], ['isolation', s.isolation || 'not reported by this gateway'],
      ['shape', `${s.memory_mib} MiB, ${s.vcpus} vCPU, ${s.disk_mib} MiB disk`],
      ['created', when(s.created_at)], ['expires', [when(s.expires_at), ' (', ttl, ')']],
      ['network grant', net], ['task', s.task_id || '—'],
    ])));
  if (can('sandboxes:exec')) main.append(commandBox(id, signal), fileBrowser(id));
  if (can('sandboxes:create')) {
    const msg = h('div', {});
    main.append(h('div', { class: 'card' }, h('button', {
      type: 'button', class: 'danger', id: 'sb-kill',
      onclick: async () => {
        try {
          await api('DELETE', `/v1/sandboxes/${enc(id)}`);
          go('#/sandboxes');
        } catch (e) { msg.replaceChildren(errorBox(e)); }
      },
    }, 'Kill sandbox'), msg));
  }
}

export async function render(main, ctx) {
  if (ctx.id) return detailPage(main, ctx.id, ctx.signal);
  const { sandboxes } = await api('GET', '/v1/sandboxes');
  return listPage(main, sandboxes);
}
