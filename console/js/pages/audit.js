// Audit: the hash-chained log, filtered by event, actor, action, outcome
// and time; the chain's verification; export as JSON lines.  Reasons and
// names come from anyone (a username typed at the login form, a file name)
// and are text nodes only.
import { api, auditNewest, enc } from '../api.js';
import { h, table, when, errorBox, download } from '../dom.js';

function isoOf(local) {
  return local ? new Date(local).toISOString().replace(/\.\d+Z$/, 'Z') : '';
}

export async function render(main) {
  const f = {
    event: h('input', { id: 'af-event', placeholder: 'auth, session, sandbox…', size: 12 }),
    actor: h('input', { id: 'af-actor', placeholder: 'key:… or user:…', size: 18 }),
    action: h('input', { id: 'af-action', placeholder: 'login', size: 12 }),
    outcome: h('select', { id: 'af-outcome' }, ['', 'allowed', 'denied', 'error'].map((o) => h('option', { value: o }, o || 'any'))),
    since: h('input', { id: 'af-since', type: 'datetime-local' }),
    until: h('input', { id: 'af-until', type: 'datetime-local' }),
  };
  const out = h('div', { id: 'audit-table' });
  const verify = h('span', { id: 'audit-verify' });
  let shown = [];
  let generation = 0; // a slower earlier load never overwrites a later one
  const load = async () => {
    const mine = ++generation;
    const q = [];
    for (const k of ['actor', 'action', 'outcome']) if (f[k].value) q.push(`${k}=${enc(f[k].value)}`);
    if (f.since.value) q.push(`since=${enc(isoOf(f.since.value))}`);
    if (f.until.value) q.push(`until=${enc(isoOf(f.until.value))}`);
    try {
      const { entries, capped } = await auditNewest(q.join('&'));
      if (mine !== generation) return;
      const ev = f.event.value.trim();
      shown = entries.filter((e) => !ev || e.event === ev).reverse();
      out.replaceChildren(h('p', { class: 'muted', id: 'audit-count' }, `${shown.length} entries, newest first`,
        capped ? ' (only the first 50 000 matches were read: narrow the time range to see later ones)' : ''),
        table(['seq', 'time', 'actor', 'event', 'resource', 'action', 'outcome', 'reason', 'source'], shown, (e) => h('tr', { class: 'audit-row' },
          h('td', {}, e.seq), h('td', {}, when(e.ts)), h('td', { class: 'mono' }, e.actor), h('td', {}, e.event),
          h('td', { class: 'mono' }, e.resource), h('td', {}, e.action),
          h('td', {}, h('span', { class: e.outcome === 'allowed' ? 'pill good' : 'pill bad' }, e.outcome)),
          h('td', { class: 'audit-reason' }, e.reason), h('td', {}, e.source_ip))));
    } catch (e) { out.replaceChildren(errorBox(e)); }
  };
  const form = h('form', { class: 'card inline', id: 'audit-filter', onsubmit: (ev) => { ev.preventDefault(); load(); } },
    h('label', {}, 'Event', f.event), h('label', {}, 'Actor', f.actor), h('label', {}, 'Action', f.action),
    h('label', {}, 'Outcome', f.outcome), h('label', {}, 'Since', f.since), h('label', {}, 'Until', f.until),
    h('button', { type: 'submit', id: 'audit-apply' }, 'Apply'));
  const tools = h('div', { class: 'row' },
    h('button', {
      type: 'button', class: 'secondary', id: 'audit-verify-button',
      onclick: async () => {
        verify.replaceChildren('verifying…');
        try {
          const v = await api('GET', '/v1/audit/verify');
          verify.replaceChildren(h('span', { class: v.intact ? 'ok' : 'error', id: 'audit-verify-result' },
            v.intact ? `chain intact (${v.entries} entries)` : `chain BROKEN at entry ${v.first_bad_seq}: ${v.message}`));
        } catch (e) { verify.replaceChildren(errorBox(e)); }
      },
    }, 'Verify chain'), verify,
    h('button', {
      type: 'button', class: 'secondary', id: 'audit-export',
      onclick: () => download('forgebox-audit.jsonl',
        new Blob(shown.slice().reverse().map((e) => `${JSON.stringify(e)}\n`), { type: 'application/x-ndjson' })),
    }, 'Export shown (JSON lines)'));
  main.append(h('h1', {}, 'Audit log'), form, tools, out);
  await load();
}
