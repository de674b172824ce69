// Switchyard web UI: the request log. The explorer asks /api/logs for one page at a time (keyset cursors
// from the API, never an offset, never "load everything"), filtered on the server; the detail view shows
// one record with its attempt trail.

import { h, fill, api, query, section, card, pageHead, table, facts, errorBox, badge, statusBadge, outcomeBadge, int, ms, usd, time, toLocalInput, fromLocalInput } from './lib.js';
import { waterfall } from './chart.js';

const RANGES = { '15m': 15 * 60e3, '1h': 3600e3, '24h': 86400e3, '7d': 7 * 86400e3, '30d': 30 * 86400e3 };
const FILTERS = ['range', 'from', 'to', 'virtual_key', 'team', 'provider', 'model', 'status', 'error', 'min_latency_ms', 'q', 'stream', 'limit'];
const ERROR_CLASSES = ['upstream_error', 'transient', 'timeout', 'rate_limited', 'key_invalid', 'quota_exhausted', 'caller_fault',
  'model_not_found', 'budget_exceeded', 'limit_reached', 'context_too_long', 'malformed', 'too_large', 'unsupported', 'degraded', 'overloaded'];

/** Cursors of the pages before the one shown, for "Newer": kept while the filters stay the same. */
const trail = { sig: '', cursors: [] };
/** The list (with its filters and page) a detail view goes back to. */
let lastList = '#/logs';

function currentFilters(params) {
  const f = {};
  for (const k of FILTERS) if (params.get(k)) f[k] = params.get(k);
  return f;
}

/** What /api/logs is asked: the range as Unix ms, the rest as given. */
function apiQuery(f, cursor) {
  const q = { ...f };
  delete q.range;
  if (!f.from && !f.to) {
    const span = RANGES[f.range || '24h'] || RANGES['24h'];
    q.from = Date.now() - span;
  }
  q.limit = f.limit || 50;
  q.cursor = cursor;
  return q;
}

async function options(path, field, label, value) {
  try {
    const data = await api(path);
    return (data[field] || []).map((x) => ({ value: x.id ?? x.name, label: label(x) })).filter((o) => o.value && !String(o.value).startsWith('…'));
  } catch (_) {
    // The list is a convenience; without it the filter is a text field.
    return value ? [{ value, label: value }] : null;
  }
}

function selectOrText(id, name, opts, value, anyLabel) {
  if (!opts) return h('input', { id, name, value: value || '', placeholder: 'id' });
  return h('select', { id, name },
    h('option', { value: '' }, anyLabel),
    opts.map((o) => h('option', { value: o.value, selected: o.value === value }, o.label)),
    value && !opts.some((o) => o.value === value) ? h('option', { value, selected: true }, value) : null);
}

export async function logsPage(root, ctx) {
  const f = currentFilters(ctx.params);
  const cursor = ctx.params.get('cursor') || '';
  const sig = JSON.stringify(f);
  if (trail.sig !== sig) { trail.sig = sig; trail.cursors = []; }
  if (!cursor) trail.cursors = [];
  lastList = location.hash || '#/logs';

  const [keys, teams, providers] = await Promise.all([
    options('/api/governance/virtual-keys?limit=1000', 'virtual_keys', (k) => k.name || k.id, f.virtual_key),
    options('/api/governance/teams?limit=1000', 'teams', (t) => t.name || t.id, f.team),
    options('/api/providers', 'providers', (p) => p.name, f.provider),
  ]);
  if (!ctx.alive()) return;

  const custom = !!(f.from || f.to);
  const rangeSel = h('select', { id: 'f-range', name: 'range' },
    Object.keys(RANGES).map((r) => h('option', { value: r, selected: !custom && (f.range || '24h') === r }, `last ${r}`)),
    h('option', { value: 'custom', selected: custom }, 'from … to …'));
  const fromIn = h('input', { id: 'f-from', name: 'from', type: 'datetime-local', value: f.from ? toLocalInput(Number(f.from)) : '' });
  const toIn = h('input', { id: 'f-to', name: 'to', type: 'datetime-local', value: f.to ? toLocalInput(Number(f.to)) : '' });
  const customBox = h('span', { class: 'custom-range' }, fromIn, ' to ', toIn);
  customBox.hidden = !custom;
  rangeSel.addEventListener('change', () => { customBox.hidden = rangeSel.value !== 'custom'; });

  const field = (label, el) => h('label', { class: 'field' }, h('span', {}, label), el);
  const inputs = {
    virtual_key: selectOrText('f-vk', 'virtual_key', keys, f.virtual_key, 'any key'),
    team: selectOrText('f-team', 'team', teams, f.team, 'any team'),
    provider: selectOrText('f-provider', 'provider', providers, f.provider, 'any provider'),
    model: h('input', { id: 'f-model', name: 'model', value: f.model || '', placeholder: 'asked or served' }),
    status: h('input', { id: 'f-status', name: 'status', value: f.status || '', placeholder: '502, 5xx', list: 'status-list', size: 6 }),
    error: h('input', { id: 'f-error', name: 'error', value: f.error || '', placeholder: 'code or class', list: 'error-list' }),
    min_latency_ms: h('input', { id: 'f-latency', name: 'min_latency_ms', type: 'number', min: 0, value: f.min_latency_ms || '', placeholder: 'ms', size: 6 }),
    q: h('input', { id: 'f-q', name: 'q', type: 'search', value: f.q || '', placeholder: 'targets, keys, outcomes, messages' }),
    stream: h('select', { id: 'f-stream', name: 'stream' }, [['', 'streams or not'], ['true', 'streams only'], ['false', 'no streams']].map(([v, l]) => h('option', { value: v, selected: (f.stream || '') === v }, l))),
    limit: h('select', { id: 'f-limit', name: 'limit' }, ['25', '50', '100', '200'].map((n) => h('option', { value: n, selected: (f.limit || '50') === n }, `${n} a page`))),
  };
  const form = h('form', { id: 'logs-filters', class: 'filters card' },
    field('Time', h('span', {}, rangeSel, customBox)),
    field('Virtual key', inputs.virtual_key), field('Team', inputs.team), field('Provider', inputs.provider),
    field('Model', inputs.model), field('Status', inputs.status), field('Error', inputs.error),
    field('Min latency', inputs.min_latency_ms), field('Text', inputs.q), field('Stream', inputs.stream), field('Page', inputs.limit),
    h('div', { class: 'filter-actions' },
      h('button', { type: 'submit', class: 'primary', id: 'f-apply' }, 'Apply'),
      h('button', { type: 'button', id: 'f-reset', onclick: () => ctx.setParams({}) }, 'Reset')),
    h('datalist', { id: 'status-list' }, ['2xx', '4xx', '5xx', '429', '500', '502', '503', '504'].map((v) => h('option', { value: v }))),
    h('datalist', { id: 'error-list' }, ERROR_CLASSES.map((v) => h('option', { value: v }))));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const next = {};
    if (rangeSel.value === 'custom') {
      next.from = fromLocalInput(fromIn.value);
      next.to = fromLocalInput(toIn.value);
    } else if (rangeSel.value !== '24h') next.range = rangeSel.value;
    for (const [k, el] of Object.entries(inputs)) if (el.value.trim() && !(k === 'limit' && el.value === '50')) next[k] = el.value.trim();
    ctx.setParams(next);
  });

  const results = h('div', { id: 'logs-results', class: 'card' }, h('p', { class: 'muted' }, 'Loading…'));
  fill(root, pageHead('Request log'), form, results);

  await section(results, async () => {
    const page = await api(`/api/logs${query(apiQuery(f, cursor))}`);
    const rows = page.data || [];
    const pager = h('div', { class: 'pager' },
      h('button', { type: 'button', id: 'page-newest', disabled: !cursor, onclick: () => ctx.setParams({ ...f }) }, '« Newest'),
      h('button', { type: 'button', id: 'page-newer', disabled: !cursor, onclick: () => ctx.setParams({ ...f, cursor: trail.cursors.pop() || undefined }) }, '‹ Newer'),
      h('span', { class: 'muted' }, `page ${trail.cursors.length + 1} · ${rows.length} request${rows.length === 1 ? '' : 's'}, newest first`),
      h('button', { type: 'button', id: 'page-older', disabled: !page.next_cursor, onclick: () => { trail.cursors.push(cursor); ctx.setParams({ ...f, cursor: page.next_cursor }); } }, 'Older ›'));
    return [
      table([
        { title: 'Time', cell: (r) => h('a', { href: `#/logs/${encodeURIComponent(r.id)}`, class: 'log-link' }, time(r.at_ms)) },
        { title: 'Status', cell: (r) => statusBadge(r.status) },
        { title: 'Model', cell: (r) => h('span', { class: 'model' }, r.model || '–') },
        { title: 'Served by', cell: (r) => (r.provider ? [h('span', {}, `${r.provider}/${r.served_model || ''}`), r.key ? h('span', { class: 'muted' }, ` · ${r.key}`) : null] : '–') },
        { title: 'Virtual key', cell: (r) => (r.caller ? r.caller.virtual_key : '–') },
        { title: 'Latency', class: 'num', cell: (r) => ms(r.latency_ms) },
        { title: 'Tokens', class: 'num', cell: (r) => (r.tokens_in === undefined && r.tokens_out === undefined ? '–' : `${int(r.tokens_in || 0)} / ${int(r.tokens_out || 0)}`) },
        { title: 'Cost', class: 'num', cell: (r) => (r.cost_nano_usd === undefined || r.cost_nano_usd === null ? '–' : usd(r.cost_nano_usd / 1e9)) },
        { title: 'Attempts', cell: (r) => [String((r.attempts || []).length),
          r.fallback_index > 0 ? badge('fallback', 'warn') : null, r.hedged ? badge('hedged', 'info') : null, r.stream ? badge('stream', 'info') : null] },
        { title: 'Error', cell: (r) => (r.error ? h('span', { class: 'err-code' }, r.error_class ? `${r.error} · ${r.error_class}` : r.error) : '') },
      ], rows, { empty: 'No request matches these filters in this range.', rowAttrs: (r) => ({ class: r.status >= 400 || !r.status ? 'row-bad log-row' : 'log-row', dataset: { id: r.id } }) }),
      pager,
    ];
  });
}

function callerFacts(c) {
  if (!c) return [['Virtual key', 'none (no key presented)']];
  return [
    // By name only: a key's id may be its value.
    ['Virtual key', c.virtual_key],
    ['Team', c.team], ['Customer', c.customer],
    ['Residency', c.restricted ? 'restricted' : null],
  ];
}

export async function logDetailPage(root, ctx) {
  const id = ctx.segs[1];
  const body = h('div', { id: 'log-detail' }, h('p', { class: 'muted' }, 'Loading…'));
  fill(root, h('p', {}, h('a', { href: lastList, id: 'back-to-logs' }, '‹ Request log')), body);
  let r;
  try {
    r = await api(`/api/logs/${encodeURIComponent(id)}`);
  } catch (e) {
    fill(body, errorBox(e, `Request ${id}`));
    return;
  }
  const attempts = r.attempts || [];
  const overhead = r.latency_ms !== undefined && r.upstream_ms !== undefined ? Math.max(0, r.latency_ms - r.upstream_ms) : null;
  fill(body,
    pageHead(h('span', {}, 'Request ', h('code', { id: 'detail-id' }, r.id)), statusBadge(r.status)),
    h('div', { class: 'grid2' },
      card('What was asked', facts([
        ['Time', time(r.at_ms)], ['Endpoint', r.endpoint], ['Call', `${r.method || ''} ${r.path || ''}`], ['Model asked', r.model],
        ['Route', r.route], ['Stream', r.stream ? `yes${r.ended ? `, ${r.ended}` : ''}` : 'no'],
        ...callerFacts(r.caller),
      ])),
      card('How it went', facts([
        ['Status', r.status === undefined || r.status === null ? 'no answer (the client left)' : String(r.status)],
        ['Error', r.error ? `${r.error}${r.error_class ? ` (${r.error_class})` : ''}` : null],
        ['Served by', r.provider ? `${r.provider}/${r.served_model || ''}` : null], ['Key', r.key],
        ['Provider tags', (r.provider_tags || []).join(', ')],
        ['Fallback', r.fallback_index > 0 ? `yes: target ${r.fallback_index + 1} of the plan served it` : (r.fallback_index === 0 ? 'no: the first target served it' : null)],
        ['Hedged', r.hedged ? 'yes' : null],
        ['Latency', ms(r.latency_ms)], ['Time to first token', r.ttft_ms !== undefined && r.ttft_ms !== null ? ms(r.ttft_ms) : null],
        ['Waiting on upstreams', ms(r.upstream_ms)], ['Gateway overhead', overhead === null ? null : ms(overhead)],
        ['Tokens in / out', r.tokens_in !== undefined || r.tokens_out !== undefined ? `${int(r.tokens_in || 0)} / ${int(r.tokens_out || 0)}${r.tokens_cached ? ` (${int(r.tokens_cached)} cached)` : ''}` : null],
        ['Cost', r.cost_nano_usd !== undefined && r.cost_nano_usd !== null ? usd(r.cost_nano_usd / 1e9) : null],
        ['Cache', r.cache], ['Trace', r.trace_id ? `${r.trace_id} / ${r.span_id || ''}` : null], ['Parent span', r.parent_span_id],
      ]))),
    card(`Attempt trail (${attempts.length})`,
      attempts.length ? waterfall(attempts, r.latency_ms) : null,
      table([
        { title: '#', cell: (a) => String(attempts.indexOf(a) + 1) },
        { title: 'Target', cell: (a) => h('span', { class: 'target' }, a.target) },
        { title: 'Key', cell: (a) => a.key || '–' },
        { title: 'Status', cell: (a) => (a.status ? String(a.status) : '–') },
        { title: 'Class', cell: (a) => (a.skipped ? badge('skipped', 'muted') : outcomeBadge(a.outcome)) },
        { title: 'Started', class: 'num', cell: (a) => `+${ms(a.start_ms)}` },
        { title: 'Latency', class: 'num', cell: (a) => ms(a.latency_ms) },
        { title: 'Hedged', cell: (a) => (a.hedged ? 'yes' : 'no') },
        { title: 'Message', cell: (a) => (a.message ? h('span', { class: 'msg' }, a.message) : '') },
      ], attempts, { empty: 'No upstream attempt: the gateway answered by itself (a refusal before any was sent).', rowAttrs: (a) => ({ class: `attempt ${a.outcome === 'success' ? 'ok' : 'failed'}` }) })),
    card('Bodies', r.request_body || r.response_body
      ? [h('h3', {}, 'Request'), h('pre', { class: 'body' }, r.request_body || '(not recorded)'), h('h3', {}, 'Response'), h('pre', { class: 'body' }, r.response_body || '(not recorded)')]
      : h('p', { class: 'muted' }, 'Not recorded: bodies are off by default (the logs settings), and never kept for a residency-restricted key unless that key allows it.')));
}
