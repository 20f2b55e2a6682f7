// api.js - the console's only way to the gateway: fetch, same origin, the
// session cookie sent by the browser (HttpOnly: this code never sees it),
// and the session's CSRF token on every request that changes something.

let csrf = null;
let onLoggedOut = null;

export function setCsrf(token) { csrf = token; }
export function whenLoggedOut(fn) { onLoggedOut = fn; }

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headersFor(method, extra) {
  const h = { Accept: 'application/json' };
  if (method !== 'GET' && method !== 'HEAD' && csrf) h['X-CSRF-Token'] = csrf;
  return Object.assign(h, extra || {});
}

async function errorOf(resp) {
  let code = `http_${resp.status}`;
  let message = `HTTP ${resp.status}`;
  try {
    const body = await resp.json();
    if (body && body.error) {
      code = String(body.error.code);
      message = String(body.error.message);
    }
  } catch (e) { /* not JSON */ }
  if (resp.status === 401 && onLoggedOut) onLoggedOut();
  return new ApiError(resp.status, code, message);
}

// method, path, JSON body (or a Blob/File: sent as octet-stream).
// opts.raw: return the Response (streams, downloads); opts.signal: abort.
export async function api(method, path, body, opts = {}) {
  const extra = Object.assign({}, opts.headers);
  let payload;
  if (body instanceof Blob) {
    extra['Content-Type'] = 'application/octet-stream';
    payload = body;
  } else if (body !== undefined) {
    extra['Content-Type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  const resp = await fetch(path, {
    method, body: payload, headers: headersFor(method, extra),
    credentials: 'same-origin', cache: 'no-store', redirect: 'error', signal: opts.signal,
  });
  if (!resp.ok) throw await errorOf(resp);
  if (opts.raw) return resp;
  if (resp.status === 204) return null;
  const t = await resp.text();
  return t ? JSON.parse(t) : null;
}

// Server-sent events from a fetch Response: yields {id, event, data}
// (data parsed as JSON when it is JSON).
export async function* sse(resp) {
  const reader = resp.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const ev = { id: null, event: 'message', data: '' };
      for (const line of block.split('\n')) {
        if (line.startsWith(':')) continue;
        const i = line.indexOf(':');
        const field = i < 0 ? line : line.slice(0, i);
        const val = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
        if (field === 'id') ev.id = val;
        else if (field === 'event') ev.event = val;
        else if (field === 'data') ev.data += (ev.data ? '\n' : '') + val;
      }
      if (!ev.data && ev.event === 'message') continue;
      try { ev.data = JSON.parse(ev.data); } catch (e) { /* text */ }
      yield ev;
    }
  }
}

export const enc = encodeURIComponent;

// The newest `keep` audit entries matching query (the API answers oldest
// first, 1000 at a time): pages forward with after_seq, at most maxPages
// pages; {entries (oldest first), capped (true if pages were left)}.
export async function auditNewest(query, keep = 1000, maxPages = 50, signal) {
  let after = 0;
  let kept = [];
  for (let page = 0; page < maxPages; page++) {
    const sep = query ? '&' : '';
    const { entries } = await api('GET', `/v1/audit?${query}${sep}limit=1000&after_seq=${after}`, undefined, { signal });
    kept = kept.concat(entries).slice(-keep);
    if (entries.length < 1000) return { entries: kept, capped: false };
    after = entries[entries.length - 1].seq;
  }
  return { entries: kept, capped: true };
}
