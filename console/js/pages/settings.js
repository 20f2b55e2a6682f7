// Settings: the effective configuration, read-only (GET /v1/config,
// admins).  Secrets arrive as "[redacted]" from the gateway already.
import { api } from '../api.js';
import { h, table } from '../dom.js';

function rows(obj, prefix, out) {
  for (const [k, v] of Object.entries(obj)) {
    const name = prefix ? `${prefix}.${k}` : k;
    if (v && typeof v === 'object' && !Array.isArray(v)) rows(v, name, out);
    else out.push([name, Array.isArray(v) ? JSON.stringify(v) : String(v)]);
  }
  return out;
}

export async function render(main) {
  const cfg = await api('GET', '/v1/config');
  main.append(h('h1', {}, 'Settings'),
    h('p', { class: 'muted' }, 'The effective configuration (defaults < forgebox.yaml < FORGEBOX_* < flags). Read-only: change forgebox.yaml and restart. Secrets are redacted.'),
    h('div', { id: 'settings-table' }, table(['key', 'value'], rows(cfg, '', []), ([k, v]) => h('tr', {},
      h('td', { class: 'mono' }, k), h('td', { class: 'mono' }, v)))));
}
