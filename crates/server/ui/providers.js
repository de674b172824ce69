// Switchyard web UI: the providers with their keys (values masked, as the API shows them) and live health,
// refreshed every few seconds; and the residency report, the same facts `switchyard check --explain`
// prints.

import { h, fill, api, section, card, pageHead, table, facts, badge, int, ms, time } from './lib.js';

const REFRESH_MS = 3000;

function circuit(health) {
  if (!health) return badge('unknown', 'muted');
  if (health.state === 'healthy') return badge('closed', 'ok');
  if (health.next_probe_in_ms) return badge(`open · probe in ${ms(health.next_probe_in_ms)}`, 'bad');
  return badge('half-open · probe due', 'warn');
}

function keyState(k) {
  if (!k) return badge('unknown', 'muted');
  if (k.cooling_down_ms) return badge(`cooling down ${ms(k.cooling_down_ms)}${k.cooldown_reason ? ` (${k.cooldown_reason.replaceAll('_', ' ')})` : ''}`, k.cooldown_reason === 'rate_limited' ? 'warn' : 'bad');
  return badge('ready', 'ok');
}

function providerCard(p, live) {
  const health = live ? live.health : null;
  const liveKeys = new Map(((live && live.keys) || []).map((k) => [k.name, k]));
  const net = p.network_config || {};
  return h('section', { class: 'card provider', dataset: { provider: p.name } },
    h('div', { class: 'card-head' },
      h('h2', {}, p.name),
      badge(p.type || '–', 'muted'),
      (p.tags || []).map((t) => badge(t, /on-?prem|local/i.test(t) ? 'onprem' : /cloud/i.test(t) ? 'cloud' : 'info')),
      h('span', { class: 'spacer' }),
      h('span', { class: 'health' }, 'health ', badge(health ? health.state : 'unknown', health && health.state === 'healthy' ? 'ok' : 'bad'), ' circuit ', circuit(health))),
    h('div', { class: 'grid2 tight' },
      facts([
        ['Base URL', net.base_url], ['Source', p.source === 'api' ? 'management API' : 'configuration file'],
        ['Models', (p.models || []).length ? p.models.join(', ') : 'any'],
        ['Timeout', net.default_request_timeout_in_seconds ? `${net.default_request_timeout_in_seconds} s` : null],
      ]),
      facts(live ? [
        ['In flight / queued', `${int(live.in_flight)} / ${int(live.queued)}`],
        ['Signals (failures)', `${int(health.signals)} (${int(health.failures)})`],
        ['p95 latency', live.latency_p95_ms !== undefined ? ms(live.latency_p95_ms) : null],
        ['Usual first byte', health.usual_first_byte_ms !== undefined ? ms(health.usual_first_byte_ms) : null],
        ['Times degraded', int(health.times_degraded)],
      ] : [['Live state', 'not reported']])),
    table([
      { title: 'Key', cell: (k) => k.name },
      { title: 'Value', cell: (k) => h('code', { class: 'masked' }, k.value || '–') },
      { title: 'Weight', class: 'num', cell: (k) => String(k.weight ?? 1) },
      { title: 'Models', cell: (k) => ((k.models || []).length ? k.models.join(', ') : 'all') },
      { title: 'State', cell: (k) => (k.enabled === false ? badge('disabled', 'muted') : keyState(liveKeys.get(k.name))) },
    ], p.keys || [], { empty: 'Keyless (a self-hosted server).' }));
}

export async function providersPage(root, ctx) {
  const stamp = h('span', { class: 'muted small', id: 'providers-updated' });
  const list = h('div', { id: 'providers-list' }, h('p', { class: 'muted' }, 'Loading…'));
  fill(root, pageHead('Providers and keys', h('span', { class: 'live-dot' }), stamp), list);
  const load = () => section(list, async () => {
    const [conf, live] = await Promise.all([api('/api/providers'), api('/api/health/providers')]);
    const byName = new Map((live.providers || []).map((p) => [p.name, p]));
    fill(stamp, `live · updated ${time(Date.now()).slice(11)}`);
    const ps = conf.providers || [];
    return ps.length ? ps.map((p) => providerCard(p, byName.get(p.name))) : h('p', { class: 'muted empty' }, 'No provider is configured.');
  });
  await load();
  ctx.every(REFRESH_MS, load);
}

export async function residencyPage(root) {
  const body = h('div', { id: 'residency' }, h('p', { class: 'muted' }, 'Loading…'));
  fill(root, pageHead('Residency'),
    h('p', { class: 'muted' }, 'For each virtual key, every provider its requests can reach (with the providers\' tags and how) and those they cannot, for what is served now: the report ',
      h('code', {}, 'switchyard check --explain'), ' prints, computed by the same code.'),
    body);
  await section(body, async () => {
    const r = await api('/api/residency');
    // Restricted keys first: they are what an auditor reads the report for.
    const keys = [...(r.virtual_keys || [])].sort((a, b) => Number(b.restricted) - Number(a.restricted));
    if (!keys.length) return h('p', { class: 'muted empty' }, 'No virtual key is configured: every request may reach every provider.');
    return keys.map((k) => h('section', { class: 'card residency-key', dataset: { key: k.name } },
      h('div', { class: 'card-head' },
        h('h2', {}, k.name),
        k.restricted ? badge('restricted', 'warn') : badge('unrestricted', 'muted'),
        k.active ? null : badge('switched off', 'muted'),
        k.team ? h('span', { class: 'muted' }, `team ${k.team}`) : null,
        k.customer ? h('span', { class: 'muted' }, `customer ${k.customer}`) : null),
      h('p', { class: 'rules' }, k.rules),
      table([
        { title: 'Provider', cell: (p) => p.provider },
        { title: 'Tags', cell: (p) => ((p.tags || []).length ? p.tags.map((t) => badge(t, /on-?prem|local/i.test(t) ? 'onprem' : /cloud/i.test(t) ? 'cloud' : 'info')) : h('span', { class: 'muted' }, 'no tags')) },
        { title: 'Reached', cell: (p) => (p.reached ? badge('reaches', 'ok') : badge('never', 'muted')) },
        { title: 'How, or why not', cell: (p) => (p.reached ? h('ul', { class: 'via' }, p.via.map((v) => h('li', {}, v))) : p.why_not) },
      ], k.providers || [], { rowAttrs: (p) => ({ class: p.reached ? 'reach' : 'never', dataset: { provider: p.provider } }) }),
      (k.violations || []).length ? h('div', { class: 'error' }, h('strong', {}, 'Violations'), h('ul', {}, k.violations.map((v) => h('li', {}, v)))) : null));
  });
}
