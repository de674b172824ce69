// Switchyard web UI: virtual keys, teams and customers, with their budgets and rate limits as bars (the
// meters' readings the management API puts beside each limit) and create / edit through the same API. A
// write the gateway refuses shows its reasons, each with its path; nothing is checked only here.

import { h, fill, api, section, card, pageHead, table, errorBox, badge, meterBar, int, usd } from './lib.js';

const KINDS = {
  key: { path: '/api/governance/virtual-keys', list: 'virtual_keys', one: 'virtual_key', title: 'Virtual keys', noun: 'virtual key', page: 'virtual-keys' },
  team: { path: '/api/governance/teams', list: 'teams', one: 'team', title: 'Teams', noun: 'team', page: 'teams' },
  customer: { path: '/api/governance/customers', list: 'customers', one: 'customer', title: 'Customers', noun: 'customer', page: 'customers' },
};
const PERIODS = ['', '1m', '1h', '1d', '1w', '1M'];
const REFRESH_MS = 5000;

function meters(e) {
  const out = [];
  const b = e.budget;
  if (b) out.push(meterBar({ label: 'budget', used: b.current_usage, reserved: b.reserved, limit: b.max_limit, format: usd, period: b.reset_duration, nextReset: b.next_reset }));
  const r = e.rate_limit;
  if (r && r.request_max_limit !== undefined) out.push(meterBar({ label: 'requests', used: r.request_current_usage, reserved: r.request_reserved, limit: r.request_max_limit, period: r.request_reset_duration, nextReset: r.request_next_reset }));
  if (r && r.token_max_limit !== undefined) out.push(meterBar({ label: 'tokens', used: r.token_current_usage, reserved: r.token_reserved, limit: r.token_max_limit, period: r.token_reset_duration, nextReset: r.token_next_reset }));
  return out.length ? h('div', { class: 'meters' }, out) : h('span', { class: 'muted' }, 'no limit');
}

function residencyText(r) {
  if (!r || (!(r.allowed_tags || []).length && !(r.denied_tags || []).length)) return h('span', { class: 'muted' }, 'any');
  return [(r.allowed_tags || []).length ? `only ${r.allowed_tags.join(' or ')}` : null, (r.denied_tags || []).length ? ` never ${r.denied_tags.join(' or ')}` : null];
}

/** An id the API masked (the key's id is its value): it cannot be addressed, so it cannot be edited here. */
function masked(id) { return typeof id === 'string' && id.startsWith('…'); }

export async function entityPage(root, ctx, kind) {
  const K = KINDS[kind];
  const formBox = h('div', { id: 'entity-form-box' });
  const list = h('div', { id: 'entity-list', class: 'card' }, h('p', { class: 'muted' }, 'Loading…'));
  const newBtn = h('button', { type: 'button', class: 'primary', id: 'entity-new' }, `New ${K.noun}`);
  fill(root, pageHead(K.title, newBtn), formBox, list);

  let refs = null;
  const loadRefs = async () => {
    const [teams, customers, providers] = await Promise.allSettled([
      api('/api/governance/teams?limit=1000'), api('/api/governance/customers?limit=1000'), api('/api/providers')]);
    refs = {
      teams: teams.status === 'fulfilled' ? teams.value.teams : [],
      customers: customers.status === 'fulfilled' ? customers.value.customers : [],
      providers: providers.status === 'fulfilled' ? providers.value.providers.map((p) => p.name) : [],
    };
    return refs;
  };

  const openForm = async (existing) => {
    fill(formBox, h('p', { class: 'muted' }, 'Loading…'));
    try {
      fill(formBox, entityForm(K, kind, existing, refs || await loadRefs(), {
        done: (saved, value) => {
          fill(formBox, value ? createdNotice(K, saved, value) : h('div', { class: 'notice', role: 'status' }, `Saved ${K.noun} "${saved.name || saved.id}".`));
          load();
        },
        cancel: () => fill(formBox),
      }));
      formBox.scrollIntoView({ block: 'start' });
    } catch (e) {
      fill(formBox, errorBox(e));
    }
  };
  newBtn.addEventListener('click', () => openForm(null));

  const actions = (e) => {
    if (e.source === 'config_file') return h('span', { class: 'muted small', title: 'Defined in the configuration file, its source of truth: change it there.' }, 'from the file');
    if (masked(e.id)) return h('span', { class: 'muted small', title: 'This key\'s id is its value, so the API never shows it; manage it with its id through the API.' }, 'id is secret');
    return h('span', { class: 'actions' },
      h('button', { type: 'button', class: 'small edit', onclick: () => openForm(e) }, 'Edit'),
      h('button', { type: 'button', class: 'small danger delete', onclick: async (ev) => {
        if (!window.confirm(`Delete ${K.noun} "${e.name || e.id}"? This takes effect at once.`)) return;
        ev.target.disabled = true;
        try {
          await api(`${K.path}/${encodeURIComponent(e.id)}`, { method: 'DELETE' });
          fill(formBox, h('div', { class: 'notice', role: 'status' }, `Deleted ${K.noun} "${e.name || e.id}".`));
        } catch (err) {
          fill(formBox, errorBox(err, `Deleting ${e.name || e.id}`));
        }
        load();
      } }, 'Delete'));
  };

  const columns = {
    key: [
      { title: 'Name', cell: (e) => [h('strong', { class: 'name' }, e.name || '–'), e.description ? h('div', { class: 'muted small' }, e.description) : null] },
      { title: 'Id', cell: (e) => h('code', {}, e.id) },
      { title: 'Team / customer', cell: (e) => [e.team_id ? h('div', {}, `team ${e.team_id}`) : null, e.customer_id ? h('div', {}, `customer ${e.customer_id}`) : null, !e.team_id && !e.customer_id ? h('span', { class: 'muted' }, '–') : null] },
      { title: 'Active', cell: (e) => (e.is_active === false ? badge('off', 'muted') : badge('on', 'ok')) },
      { title: 'Providers', cell: (e) => ((e.provider_configs || []).length ? h('div', { class: 'pcs' }, e.provider_configs.map((pc) => h('div', { class: 'pc' }, h('span', {}, pc.provider), pc.budget || pc.rate_limit ? meters(pc) : null))) : h('span', { class: 'muted' }, 'all')) },
      { title: 'Residency', cell: (e) => residencyText(e.residency) },
      { title: 'Budget and limits', class: 'meters-cell', cell: (e) => [meters(e), e.in_flight !== undefined ? h('div', { class: 'muted small' }, `${int(e.in_flight)} in flight of ${int(e.max_concurrent)}`) : null] },
      { title: '', cell: actions },
    ],
    team: [
      { title: 'Name', cell: (e) => h('strong', { class: 'name' }, e.name || e.id) },
      { title: 'Id', cell: (e) => h('code', {}, e.id) },
      { title: 'Customer', cell: (e) => e.customer_id || '–' },
      { title: 'Residency', cell: (e) => residencyText(e.residency) },
      { title: 'Budget and limits', class: 'meters-cell', cell: meters },
      { title: '', cell: actions },
    ],
    customer: [
      { title: 'Name', cell: (e) => h('strong', { class: 'name' }, e.name || e.id) },
      { title: 'Id', cell: (e) => h('code', {}, e.id) },
      { title: 'Budget and limits', class: 'meters-cell', cell: meters },
      { title: '', cell: actions },
    ],
  }[kind];

  const load = () => section(list, async () => {
    const data = await api(`${K.path}?limit=1000`);
    const rows = data[K.list] || [];
    return [
      table(columns, rows, { empty: `No ${K.noun} yet.`, rowAttrs: (e) => ({ class: 'entity-row', dataset: { name: e.name || e.id } }) }),
      data.total_count > rows.length ? h('p', { class: 'muted small' }, `Showing ${rows.length} of ${data.total_count}.`) : null,
    ];
  });
  await load();
  ctx.every(REFRESH_MS, load);
}

function createdNotice(K, saved, value) {
  const code = h('code', { id: 'created-value', class: 'secret' }, value);
  return h('div', { class: 'notice', role: 'status' },
    h('strong', {}, `Created ${K.noun} "${saved.name}".`),
    h('p', {}, 'Its value, shown this once (the gateway keeps only its hash): callers send it as their API key.'),
    h('div', { class: 'secret-row' }, code,
      h('button', { type: 'button', class: 'small', onclick: (ev) => {
        navigator.clipboard && navigator.clipboard.writeText(value).then(() => { ev.target.textContent = 'Copied'; }, () => {});
      } }, 'Copy')));
}

const list = (v) => v.split(',').map((x) => x.trim()).filter(Boolean);

/** The create / edit form. `existing` is the entity as the API showed it (edit), or null (create). */
function entityForm(K, kind, existing, refs, { done, cancel }) {
  const e = existing ? structuredClone(existing) : {};
  const msg = h('div', { class: 'form-msg' });
  const field = (label, el, hint) => h('label', { class: 'field' }, h('span', {}, label), el, hint ? h('small', { class: 'muted' }, hint) : null);
  const periodSel = (id, value) => h('select', { id }, PERIODS.map((p) => h('option', { value: p, selected: (value || '') === p }, p || 'never resets')));
  const num = (id, value, attrs = {}) => h('input', { id, type: 'number', min: 0, step: 'any', value: value ?? '', ...attrs });

  const f = {
    id: existing ? null : h('input', { id: 'ef-id', placeholder: 'made by the gateway when empty' }),
    name: h('input', { id: 'ef-name', value: e.name || '', required: kind === 'key' }),
    budget: num('ef-budget', e.budget ? e.budget.max_limit : '', { placeholder: 'USD' }),
    budgetPeriod: periodSel('ef-budget-period', e.budget ? e.budget.reset_duration : '1M'),
    requests: num('ef-requests', e.rate_limit ? e.rate_limit.request_max_limit : '', { step: 1 }),
    requestsPeriod: periodSel('ef-requests-period', e.rate_limit ? e.rate_limit.request_reset_duration : '1m'),
    tokens: num('ef-tokens', e.rate_limit ? e.rate_limit.token_max_limit : '', { step: 1 }),
    tokensPeriod: periodSel('ef-tokens-period', e.rate_limit ? e.rate_limit.token_reset_duration : '1h'),
  };
  const sel = (id, items, value, none) => h('select', { id }, h('option', { value: '' }, none),
    items.map((x) => h('option', { value: x.id, selected: x.id === value }, x.name ? `${x.name} (${x.id})` : x.id)));
  if (kind === 'key') {
    f.description = h('input', { id: 'ef-description', value: e.description || '' });
    f.active = h('input', { id: 'ef-active', type: 'checkbox', checked: e.is_active !== false });
    f.team = sel('ef-team', refs.teams, e.team_id, 'no team');
    f.customer = sel('ef-customer', refs.customers, e.customer_id, 'no customer');
    f.concurrent = num('ef-concurrent', e.max_concurrent, { step: 1 });
    f.logBodies = h('input', { id: 'ef-log-bodies', type: 'checkbox', checked: !!e.log_bodies });
    const granted = new Set((e.provider_configs || []).map((pc) => pc.provider));
    f.providers = refs.providers.map((p) => h('label', { class: 'check' }, h('input', { type: 'checkbox', class: 'ef-provider', value: p, checked: granted.has(p) }), p));
  }
  if (kind === 'team') f.customer = sel('ef-customer', refs.customers, e.customer_id, 'no customer');
  if (kind !== 'customer') {
    f.allowed = h('input', { id: 'ef-allowed-tags', value: ((e.residency && e.residency.allowed_tags) || []).join(', '), placeholder: 'e.g. on-prem' });
    f.denied = h('input', { id: 'ef-denied-tags', value: ((e.residency && e.residency.denied_tags) || []).join(', '), placeholder: 'e.g. cloud' });
  }

  const submit = h('button', { type: 'submit', class: 'primary', id: 'ef-save' }, existing ? 'Save' : `Create ${K.noun}`);
  const form = h('form', { id: 'entity-form', class: 'card form' },
    h('h2', {}, existing ? `Edit ${K.noun} "${existing.name || existing.id}"` : `New ${K.noun}`),
    h('div', { class: 'form-grid' },
      f.id ? field('Id', f.id) : null,
      field('Name', f.name),
      f.description ? field('Description', f.description) : null,
      f.team ? field('Team', f.team) : null,
      f.customer ? field('Customer', f.customer) : null,
      field('Budget (USD)', h('span', { class: 'pair' }, f.budget, f.budgetPeriod), 'empty: no budget'),
      field('Requests', h('span', { class: 'pair' }, f.requests, f.requestsPeriod), 'empty: no request limit'),
      field('Tokens', h('span', { class: 'pair' }, f.tokens, f.tokensPeriod), 'input and output together'),
      f.concurrent ? field('Max concurrent', f.concurrent) : null,
      f.allowed ? field('Only providers tagged', f.allowed, 'comma-separated; empty: any') : null,
      f.denied ? field('Never providers tagged', f.denied, 'comma-separated') : null,
      f.active ? h('div', { class: 'checks' }, h('label', { class: 'check' }, f.active, 'Active'),
        h('label', { class: 'check' }, f.logBodies, 'Record its request and response bodies (when the log records bodies)')) : null),
    f.providers ? h('fieldset', { class: 'providers' }, h('legend', {}, 'Providers (none ticked: every provider its residency allows)'),
      f.providers.length ? f.providers : h('span', { class: 'muted' }, 'No provider is configured.')) : null,
    msg,
    h('div', { class: 'form-actions' }, submit, h('button', { type: 'button', id: 'ef-cancel', onclick: cancel }, 'Cancel')));

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = e;
    if (f.id && f.id.value.trim()) body.id = f.id.value.trim();
    body.name = f.name.value.trim();
    const setOrDrop = (k, v) => { if (v === undefined || v === null || v === '') delete body[k]; else body[k] = v; };
    if (f.budget.value !== '') {
      body.budget = { ...(body.budget || {}), max_limit: Number(f.budget.value) };
      if (f.budgetPeriod.value) body.budget.reset_duration = f.budgetPeriod.value; else delete body.budget.reset_duration;
    } else delete body.budget;
    const rl = {};
    if (f.requests.value !== '') { rl.request_max_limit = Number(f.requests.value); if (f.requestsPeriod.value) rl.request_reset_duration = f.requestsPeriod.value; }
    if (f.tokens.value !== '') { rl.token_max_limit = Number(f.tokens.value); if (f.tokensPeriod.value) rl.token_reset_duration = f.tokensPeriod.value; }
    setOrDrop('rate_limit', Object.keys(rl).length ? rl : null);
    if (kind === 'key') {
      body.description = f.description.value.trim();
      body.is_active = f.active.checked;
      setOrDrop('team_id', f.team.value);
      setOrDrop('customer_id', f.customer.value);
      setOrDrop('max_concurrent', f.concurrent.value === '' ? null : Number(f.concurrent.value));
      body.log_bodies = f.logBodies.checked;
      const ticked = f.providers.filter((l) => l.firstChild.checked).map((l) => l.firstChild.value);
      const before = new Map((body.provider_configs || []).map((pc) => [pc.provider, pc]));
      // A provider kept keeps its own settings (models, weight, limits); a new one gets the defaults.
      body.provider_configs = ticked.map((p) => before.get(p) || { provider: p });
    }
    if (kind === 'team') setOrDrop('customer_id', f.customer.value);
    if (f.allowed) {
      const allowed = list(f.allowed.value);
      const denied = list(f.denied.value);
      setOrDrop('residency', allowed.length || denied.length ? { allowed_tags: allowed, denied_tags: denied } : null);
    }
    submit.disabled = true;
    fill(msg, h('span', { class: 'muted' }, 'Saving…'));
    try {
      const resp = existing
        ? await api(`${K.path}/${encodeURIComponent(existing.id)}`, { method: 'PUT', body })
        : await api(K.path, { method: 'POST', body });
      const saved = resp[K.one] || body;
      done(saved, !existing && kind === 'key' ? saved.value : null);
    } catch (err) {
      fill(msg, errorBox(err, `The gateway did not save this ${K.noun}`));
      submit.disabled = false;
    }
  });
  return form;
}
