// Switchyard web UI: the dashboard. Everything on it comes from /api/stats, which reads pre-aggregated
// rollups: three calls per view (overall, by the chosen group, by key and provider tags), whatever the
// size of the request log.

import { h, fill, api, query, section, card, pageHead, table, int, ms, usd, pct } from './lib.js';
import { lineChart, PALETTE } from './chart.js';

const RANGES = { '1h': 3600e3, '6h': 6 * 3600e3, '24h': 86400e3, '7d': 7 * 86400e3, '30d': 30 * 86400e3 };
const GROUPS = { provider: 'Provider', virtual_key: 'Virtual key', team: 'Team', customer: 'Customer', model: 'Model' };
/** Lines drawn per chart; the table below lists every group. */
const TOP = 6;
const REFRESH_MS = 15000;

export async function dashboardPage(root, ctx) {
  const range = RANGES[ctx.params.get('range')] ? ctx.params.get('range') : '24h';
  const group = GROUPS[ctx.params.get('group')] ? ctx.params.get('group') : 'provider';
  const rangeSel = h('select', { id: 'dash-range', 'aria-label': 'time range' },
    Object.keys(RANGES).map((r) => h('option', { value: r, selected: r === range }, `last ${r}`)));
  const groupSel = h('select', { id: 'dash-group', 'aria-label': 'group by' },
    Object.entries(GROUPS).map(([k, v]) => h('option', { value: k, selected: k === group }, `by ${v.toLowerCase()}`)));
  const change = () => ctx.setParams({ range: rangeSel.value, group: groupSel.value });
  rangeSel.addEventListener('change', change);
  groupSel.addEventListener('change', change);

  const kpis = h('div', { class: 'kpis', id: 'dash-kpis' }, h('p', { class: 'muted' }, 'Loading…'));
  const overall = h('div', { class: 'grid2', id: 'dash-overall' });
  const grouped = h('div', { id: 'dash-grouped' });
  const split = h('div', { id: 'dash-split' });
  fill(root,
    pageHead('Dashboard', rangeSel, groupSel),
    kpis,
    overall,
    card(`By ${GROUPS[group].toLowerCase()}`, grouped),
    card('Residency split per virtual key', h('p', { class: 'muted small' },
      'Requests each key sent to providers by their tags (on-prem, cloud, ...), as the routing decided them.'), split));

  const load = async () => {
    const to = Date.now();
    const from = to - RANGES[range];
    await Promise.all([
      section(kpis, async () => {
        const st = await api(`/api/stats${query({ from, to })}`);
        const g = (st.groups && st.groups[0]) || { series: [] };
        fill(overall,
          card('Requests and errors', lineChart({ from: st.from_ms, to: st.to_ms, whole: true, label: 'requests and errors', series: [
            { name: 'requests', color: PALETTE[0], points: fillSeries(st, g.series, 'requests', 0) },
            { name: 'errors', color: PALETTE[3], points: fillSeries(st, g.series, 'errors', 0) }] })),
          card('Latency', lineChart({ from: st.from_ms, to: st.to_ms, format: ms, whole: true, label: 'latency', series: [
            { name: 'p50', color: PALETTE[2], points: fillSeries(st, g.series, 'p50_ms', null) },
            { name: 'p95', color: PALETTE[1], points: fillSeries(st, g.series, 'p95_ms', null) }] })));
        return kpiCards(st.totals || {});
      }),
      section(grouped, async () => {
        const st = await api(`/api/stats${query({ from, to, group_by: group })}`);
        return groupedView(st, group);
      }),
      section(split, async () => {
        const st = await api(`/api/stats${query({ from, to, group_by: 'virtual_key,provider_tags' })}`);
        return splitView(st);
      }),
    ]);
  };
  await load();
  ctx.every(REFRESH_MS, load);
}

function kpiCards(t) {
  const errRate = t.requests ? t.errors / t.requests : 0;
  const kpi = (id, label, value, sub) => h('div', { class: 'kpi', id }, h('div', { class: 'kpi-label' }, label), h('div', { class: 'kpi-value' }, value), sub ? h('div', { class: 'kpi-sub muted' }, sub) : null);
  return [
    kpi('kpi-requests', 'Requests', int(t.requests)),
    kpi('kpi-errors', 'Errors', int(t.errors), `${pct(errRate)} of requests`),
    kpi('kpi-p50', 'p50 latency', ms(t.p50_ms)),
    kpi('kpi-p95', 'p95 latency', ms(t.p95_ms)),
    kpi('kpi-cost', 'Cost', usd(t.cost_usd)),
    kpi('kpi-tokens', 'Tokens', int((t.tokens_in || 0) + (t.tokens_out || 0)), `${int(t.tokens_in)} in · ${int(t.tokens_out)} out`),
    kpi('kpi-fallback', 'Fallback rate', pct(t.fallback_rate), `${int(t.fallbacks)} served by a fallback`),
  ];
}

/**
 * A series on the stats' bucket grid: buckets without requests are left out by the API; counts there are
 * 0, latencies and rates have no value (`missing`).
 */
function fillSeries(st, series, field, missing) {
  const iv = st.interval_ms;
  const pts = new Map((series || []).map((p) => [p.t_ms, p[field] ?? missing]));
  if (!iv || (st.to_ms - st.from_ms) / iv > 2000) return [...pts.entries()].sort((a, b) => a[0] - b[0]);
  const out = [];
  const start = Math.floor(st.from_ms / iv) * iv;
  // Buckets are on the interval's grid if the API aligns them; otherwise its own times are used as they are.
  const aligned = [...pts.keys()].every((t) => (t - start) % iv === 0);
  if (!aligned) return [...pts.entries()].sort((a, b) => a[0] - b[0]);
  for (let t = start; t < st.to_ms; t += iv) out.push([t, pts.has(t) ? pts.get(t) : missing]);
  return out;
}

function groupLabel(g, group) {
  const key = g.keys ? g.keys[group] : undefined;
  const label = g.labels ? g.labels[group] : undefined;
  if (label !== undefined && label !== null && label !== '') return String(label);
  if (key !== undefined && key !== null && key !== '') return String(key);
  return `(no ${GROUPS[group] ? GROUPS[group].toLowerCase() : group})`;
}

/** The logs explorer, filtered to one group's entity. */
function logsLink(g, group, text) {
  const key = g.keys ? g.keys[group] : null;
  if (key === null || key === undefined || key === '') return text;
  return h('a', { href: `#/logs${query({ [group]: key })}` }, text);
}

function groupedView(st, group) {
  const groups = [...(st.groups || [])].sort((a, b) => (b.totals.requests || 0) - (a.totals.requests || 0));
  if (!groups.length) return h('p', { class: 'muted empty' }, 'No requests in this range.');
  const top = groups.slice(0, TOP);
  const chart = (title, field, format, missing, whole) => card(title, lineChart({
    from: st.from_ms, to: st.to_ms, format, whole, label: title,
    series: top.map((g, i) => ({ name: groupLabel(g, group), color: PALETTE[i % PALETTE.length], points: fillSeries(st, g.series, field, missing) })),
  }));
  const note = groups.length > TOP ? h('p', { class: 'muted small' }, `The charts show the ${TOP} busiest of ${groups.length}; the table lists all.`) : null;
  return [
    h('div', { class: 'grid3' },
      chart('Requests', 'requests', int, 0, true),
      chart('Errors', 'errors', int, 0, true),
      chart('p95 latency', 'p95_ms', ms, null, true),
      chart('Cost (USD)', 'cost_usd', usd, 0, false),
      chart('Fallback rate', 'fallback_rate', pct, null, false),
      chart('Tokens out', 'tokens_out', int, 0, true)),
    note,
    table([
      { title: GROUPS[group], cell: (g) => logsLink(g, group, groupLabel(g, group)) },
      { title: 'Requests', class: 'num', cell: (g) => int(g.totals.requests) },
      { title: 'Errors', class: 'num', cell: (g) => `${int(g.totals.errors)} (${pct(g.totals.requests ? g.totals.errors / g.totals.requests : 0)})` },
      { title: 'p50', class: 'num', cell: (g) => ms(g.totals.p50_ms) },
      { title: 'p95', class: 'num', cell: (g) => ms(g.totals.p95_ms) },
      { title: 'Tokens in / out', class: 'num', cell: (g) => `${int(g.totals.tokens_in)} / ${int(g.totals.tokens_out)}` },
      { title: 'Cost', class: 'num', cell: (g) => usd(g.totals.cost_usd) },
      { title: 'Fallback rate', class: 'num', cell: (g) => pct(g.totals.fallback_rate) },
    ], groups, { rowAttrs: () => ({ class: 'group-row' }) }),
  ];
}

function tagKind(tag) {
  if (/on-?prem|local|self-hosted/i.test(tag)) return 'onprem';
  if (/cloud/i.test(tag)) return 'cloud';
  return 'other';
}

function splitView(st) {
  const keys = new Map();
  for (const g of st.groups || []) {
    const id = g.keys ? g.keys.virtual_key : null;
    const name = (g.labels && g.labels.virtual_key) || id || '(no virtual key)';
    const rawTag = g.keys ? g.keys.provider_tags : null;
    const tag = Array.isArray(rawTag) ? rawTag.join(', ') : (rawTag || '(untagged)');
    const k = keys.get(id ?? '') || { name, id, total: 0, tokens: 0, parts: [] };
    k.total += g.totals.requests || 0;
    k.tokens += (g.totals.tokens_in || 0) + (g.totals.tokens_out || 0);
    k.parts.push({ tag, requests: g.totals.requests || 0, tokens: (g.totals.tokens_in || 0) + (g.totals.tokens_out || 0) });
    keys.set(id ?? '', k);
  }
  const rows = [...keys.values()].sort((a, b) => b.total - a.total);
  if (!rows.length) return h('p', { class: 'muted empty' }, 'No requests in this range.');
  return h('div', { class: 'split' }, rows.map((k) => {
    const bar = h('div', { class: 'split-bar' });
    k.parts.sort((a, b) => b.requests - a.requests);
    for (const p of k.parts) {
      const seg = h('div', { class: `split-seg ${tagKind(p.tag)}`, title: `${p.tag}: ${int(p.requests)} requests, ${int(p.tokens)} tokens` });
      seg.style.width = `${k.total ? (p.requests / k.total) * 100 : 0}%`;
      bar.append(seg);
    }
    return h('div', { class: 'split-row' },
      h('div', { class: 'split-name' }, k.id ? h('a', { href: `#/logs${query({ virtual_key: k.id })}` }, k.name) : k.name),
      bar,
      h('div', { class: 'split-legend small' }, k.parts.map((p) => h('span', { class: `split-item ${tagKind(p.tag)}` },
        h('span', { class: 'swatch' }), `${p.tag} ${pct(k.total ? p.requests / k.total : 0)} · ${int(p.requests)} req · ${int(p.tokens)} tok`))));
  }));
}
