// dom.js - building the page from data without ever parsing data as HTML.
//
// Everything a sandbox, a model or another user produced (output, file
// names, task text, audit reasons, names) reaches the page through h() and
// text(), which create elements and text nodes: no innerHTML, no
// insertAdjacentHTML, no document.write anywhere in the console.  Event
// handlers are functions, never attribute strings; href values are limited
// to the console's own fragment and path links, so a "javascript:" URL in
// data can never become a link.

export function safeHref(v) {
  const s = String(v);
  return /^#\/[A-Za-z0-9_\/.?=&%-]*$/.test(s) || /^\/console\/[A-Za-z0-9_\/.-]*$/.test(s) ? s : '#';
}

export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) {
      if (typeof v === 'function') el.addEventListener(k.slice(2), v);
    } else if (k === 'class') {
      el.className = v;
    } else if (k === 'href') {
      el.setAttribute('href', safeHref(v));
    } else if (k === 'value') {
      el.value = v;
    } else if (k === 'checked' || k === 'disabled' || k === 'hidden' || k === 'required' || k === 'multiple') {
      el[k] = Boolean(v);
    } else {
      el.setAttribute(k, String(v));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of [children].flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function text(s) {
  return document.createTextNode(s === null || s === undefined ? '' : String(s));
}

export function table(columns, rows, rowFn) {
  return h('table', {},
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', {}, c)))),
    h('tbody', {}, rows.length ? rows.map(rowFn)
      : h('tr', {}, h('td', { colspan: columns.length, class: 'muted' }, 'nothing here'))));
}

export function kv(pairs) {
  return h('dl', { class: 'kv' }, pairs.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

export function errorBox(err) {
  return h('p', { class: 'error', role: 'alert' }, err && err.message ? err.message : String(err));
}

export function when(t) {
  if (!t) return '—';
  const d = new Date(t);
  return Number.isNaN(d.getTime()) ? String(t) : d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

// Offers bytes as a file download (a blob: URL, revoked right after).
export function download(name, blob) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
