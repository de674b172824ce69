// Switchyard web UI: what every page shares. Elements are made with h() and s(), which set text as text:
// nothing here turns a string into markup, so a model name or a log message such as "<script>" is shown as
// those characters and never run (the Content-Security-Policy would refuse to run it anyway).

const TOKEN_KEY = 'switchyard.admin_token';

export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  set(token) { sessionStorage.setItem(TOKEN_KEY, token); },
  clear() { sessionStorage.removeItem(TOKEN_KEY); },
};

/** An HTML element: h('a', {href: '#/x', class: 'y', onclick: fn}, 'text', child, [more]). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';

/** An SVG element, as h() makes HTML ones. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value' && 'value' in el) el.value = v;
    else if (k === 'checked' || k === 'selected' || k === 'disabled') el[k] = !!v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A refusal or failure of the management API, with what the page shows about it. */
export class ApiError extends Error {
  constructor(status, code, message, what, issues) {
    super(message);
    this.status = status;
    this.code = code;
    this.what = what;
    this.issues = issues || [];
  }
}

/** Called when the API says the token is not (or no longer) accepted. */
let onUnauthorized = () => {};
export function whenUnauthorized(fn) { onUnauthorized = fn; }

/**
 * The management API: JSON in and out, the admin token from this tab's session. Throws an ApiError with
 * the API's own message on any refusal, and one with status 0 when the gateway cannot be reached.
 */
export async function api(path, { method = 'GET', body, token, quiet401 = false } = {}) {
  const headers = { accept: 'application/json' };
  const t = token ?? session.token;
  if (t) headers.authorization = `Bearer ${t}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const what = `${method} ${path.split('?')[0]}`;
  let resp;
  try {
    resp = await fetch(path, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store', credentials: 'omit', redirect: 'error',
    });
  } catch (e) {
    throw new ApiError(0, 'unreachable', `cannot reach the gateway (${e.message || e})`, what);
  }
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
  if (!resp.ok) {
    const err = data && typeof data === 'object' && data.error ? data.error : null;
    const e = new ApiError(resp.status, (err && err.code) || `http_${resp.status}`,
      (err && err.message) || text.slice(0, 300) || resp.statusText, what, err && err.issues);
    if (resp.status === 401 && !quiet401) onUnauthorized(e);
    throw e;
  }
  if (data === null && text) throw new ApiError(resp.status, 'not_json', `the answer is not JSON: ${text.slice(0, 120)}`, what);
  return data;
}

/** A query string from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === '') continue;
    q.set(k, String(v));
  }
  const str = q.toString();
  return str ? `?${str}` : '';
}

/** The box a failed call leaves in the page: what was asked, the status and code, the API's message. */
export function errorBox(e, context) {
  const isApi = e instanceof ApiError;
  const head = isApi
    ? (e.status === 0 ? `${e.what}: the gateway did not answer` : `${e.what} failed: ${e.status} ${e.code}`)
    : 'Something went wrong in the page';
  return h('div', { class: 'error', role: 'alert' },
    h('strong', {}, context ? `${context}: ${head}` : head),
    isApi && e.issues.length
      ? h('ul', {}, e.issues.map((i) => h('li', {}, h('code', {}, i.path || ''), ' ', i.message || '')))
      : h('div', { class: 'error-msg' }, e.message || String(e)),
    isApi && e.status === 404 && e.code === 'unknown_route' ? h('div', { class: 'muted' }, 'This gateway does not serve that route (an older version?).') : null);
}

/** Runs a section's loader into its container, showing a failure there instead of the content. */
export async function section(el, load) {
  try {
    const content = await load();
    if (content !== undefined) fill(el, content);
  } catch (e) {
    fill(el, errorBox(e));
  }
}

// ---- formatting -------------------------------------------------------------------------------------

const nf = new Intl.NumberFormat('en-US');
export function int(n) { return n === null || n === undefined ? '–' : nf.format(Math.round(n)); }

export function ms(n) {
  if (n === null || n === undefined) return '–';
  if (n < 1000) return `${Math.round(n)} ms`;
  if (n < 60000) return `${(n / 1000).toFixed(n < 10000 ? 2 : 1)} s`;
  return `${(n / 60000).toFixed(1)} min`;
}

export function usd(x) {
  if (x === null || x === undefined) return '–';
  if (x === 0) return '$0';
  const a = Math.abs(x);
  // Two significant digits for the tiny costs of single requests ($0.0000014), cents and more otherwise.
  const digits = a >= 1 ? 2 : Math.min(12, 2 - Math.floor(Math.log10(a)));
  let t = x.toFixed(Math.max(2, digits));
  t = t.replace(/(\.\d\d\d*?)0+$/, '$1');
  return `$${t}`;
}

export function pct(x) {
  if (x === null || x === undefined || Number.isNaN(x)) return '–';
  const p = x * 100;
  return `${p === 0 ? '0' : p < 0.1 ? p.toFixed(2) : p.toFixed(1)} %`;
}

function pad(n) { return String(n).padStart(2, '0'); }

/** Local date and time, to the second. */
export function time(t) {
  if (t === null || t === undefined) return '–';
  const d = new Date(t);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** `YYYY-MM-DDTHH:MM` for a datetime-local input, and back. */
export function toLocalInput(t) {
  const d = new Date(t);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}
export function fromLocalInput(v) {
  if (!v) return null;
  const t = new Date(v).getTime();
  return Number.isNaN(t) ? null : t;
}

/** "in 3 h 20 min", "12 s ago": for resets and probes. */
export function relative(t) {
  if (!t) return '–';
  const when = typeof t === 'number' ? t : Date.parse(t);
  if (Number.isNaN(when)) return String(t);
  const d = when - Date.now();
  const a = Math.abs(d);
  let txt;
  if (a < 60e3) txt = `${Math.round(a / 1e3)} s`;
  else if (a < 3600e3) txt = `${Math.round(a / 60e3)} min`;
  else if (a < 86400e3) {
    const min = Math.round(a / 60e3);
    txt = `${Math.floor(min / 60)} h ${min % 60} min`;
  }
  else txt = `${Math.round(a / 86400e3)} d`;
  return d >= 0 ? `in ${txt}` : `${txt} ago`;
}

// ---- small components -------------------------------------------------------------------------------

export function badge(text, kind) { return h('span', { class: `badge ${kind || ''}` }, text); }

export function statusBadge(status) {
  if (status === null || status === undefined) return badge('no answer', 'bad');
  const kind = status < 300 ? 'ok' : status === 429 || status < 500 ? 'warn' : 'bad';
  return badge(String(status), kind);
}

export function outcomeBadge(outcome) {
  return badge(outcome || '–', outcome === 'success' ? 'ok' : 'bad');
}

/**
 * A meter as a bar: used (solid) and reserved by requests in flight (hatched) against the limit, with the
 * numbers beside. Turns amber from 80 % and red at the limit.
 */
export function meterBar({ label, used, reserved, limit, format = int, period, nextReset }) {
  const u = Number(used) || 0;
  const r = Number(reserved) || 0;
  const frac = limit > 0 ? (u + r) / limit : (u + r > 0 ? 1 : 0);
  const kind = frac >= 1 ? 'over' : frac >= 0.8 ? 'high' : 'ok';
  const used_el = h('div', { class: 'bar-used' });
  const res_el = h('div', { class: 'bar-reserved' });
  // CSSOM, not a style attribute: the CSP forbids inline styles, not script-set ones.
  used_el.style.width = `${Math.min(100, limit > 0 ? (u / limit) * 100 : (u > 0 ? 100 : 0))}%`;
  res_el.style.width = `${Math.min(100, limit > 0 ? (r / limit) * 100 : 0)}%`;
  const title = `${label}: ${format(u)} used${r ? `, ${format(r)} reserved` : ''} of ${format(limit)}${period ? ` per ${period}` : ''}`;
  return h('div', { class: `meter ${kind}`, title },
    h('div', { class: 'meter-head' },
      h('span', { class: 'meter-label' }, label),
      h('span', { class: 'meter-num' }, `${format(u)} / ${format(limit)}${period ? ` per ${period}` : ''}`)),
    h('div', { class: 'bar' }, used_el, res_el),
    nextReset ? h('div', { class: 'meter-foot muted' }, `resets ${relative(nextReset)}`) : null);
}

/** A table from column definitions: [{title, cell: row => node|string, class}]. */
export function table(columns, rows, { empty = 'Nothing here yet.', rowAttrs } = {}) {
  if (!rows.length) return h('p', { class: 'muted empty' }, empty);
  return h('div', { class: 'table-wrap' }, h('table', {},
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { class: c.class }, c.title)))),
    h('tbody', {}, rows.map((r) => h('tr', rowAttrs ? rowAttrs(r) : {}, columns.map((c) => h('td', { class: c.class }, c.cell(r))))))));
}

/** A definition list of facts, skipping the ones with no value. */
export function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(([, v]) => v !== null && v !== undefined && v !== '').map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

export function card(title, ...children) {
  return h('section', { class: 'card' }, title ? h('h2', {}, title) : null, ...children);
}

/** A page heading with optional controls on its right. */
export function pageHead(title, ...right) {
  return h('div', { class: 'page-head' }, h('h1', {}, title), h('div', { class: 'page-tools' }, ...right));
}
