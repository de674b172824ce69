// Switchyard web UI: the entry point. A hash router (#/page/arg?filters) draws one page at a time into
// <main>; every page reads the management API with the admin token this tab signed in with. Timers a
// page starts (live refreshes) stop when another page is drawn.

import { h, fill, api, session, whenUnauthorized, ApiError, errorBox } from './lib.js';
import { dashboardPage } from './dashboard.js';
import { logsPage, logDetailPage } from './logs.js';
import { providersPage, residencyPage } from './providers.js';
import { entityPage } from './entities.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const logout = document.getElementById('logout');

let generation = 0;
let timers = [];

function stopTimers() {
  timers.forEach(clearInterval);
  timers = [];
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, q] = raw.split('?');
  const segs = path.split('/').filter(Boolean).map((x) => {
    try { return decodeURIComponent(x); } catch (_) { return x; }
  });
  return { segs, params: new URLSearchParams(q || '') };
}

export function go(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

const PAGES = {
  dashboard: dashboardPage,
  logs: (root, ctx) => (ctx.segs[1] ? logDetailPage(root, ctx) : logsPage(root, ctx)),
  providers: providersPage,
  'virtual-keys': (root, ctx) => entityPage(root, ctx, 'key'),
  teams: (root, ctx) => entityPage(root, ctx, 'team'),
  customers: (root, ctx) => entityPage(root, ctx, 'customer'),
  residency: residencyPage,
};

async function render() {
  stopTimers();
  const gen = ++generation;
  const { segs, params } = parseHash();
  const page = segs[0] || 'dashboard';
  if (page === 'login' || !session.token) {
    showNav(false);
    const next = page === 'login' ? params.get('next') : location.hash;
    loginPage(params, next);
    return;
  }
  showNav(true, page);
  const draw = PAGES[page];
  const ctx = {
    segs, params, go,
    alive: () => gen === generation,
    /** Runs `fn` every so often while this page is shown and the tab visible, never two at once. */
    every(msInterval, fn) {
      if (gen !== generation) return;
      let busy = false;
      timers.push(setInterval(async () => {
        if (busy || gen !== generation || document.hidden) return;
        busy = true;
        try { await fn(); } finally { busy = false; }
      }, msInterval));
    },
    /** Puts these filters into the address (so a view can be bookmarked and shared) and redraws. */
    setParams(next) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(next)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
      const str = q.toString();
      go(`#/${segs.map(encodeURIComponent).join('/')}${str ? `?${str}` : ''}`);
    },
  };
  const root = h('div', { class: 'page', id: `page-${page}` });
  fill(main, root);
  if (!draw) {
    fill(root, h('h1', {}, 'No such page'), h('p', {}, h('a', { href: '#/dashboard' }, 'Go to the dashboard')));
    return;
  }
  try {
    await draw(root, ctx);
  } catch (e) {
    if (gen === generation) root.append(errorBox(e));
  }
}

function showNav(on, page) {
  nav.hidden = !on;
  logout.hidden = !on;
  for (const a of nav.querySelectorAll('a')) a.classList.toggle('active', a.dataset.page === page);
}

function loginPage(params, next) {
  const input = h('input', { id: 'token', type: 'password', name: 'token', autocomplete: 'current-password', required: true, placeholder: 'admin token', spellcheck: 'false' });
  const msg = h('div', { id: 'login-message', role: 'status' });
  if (params.get('expired')) {
    fill(msg, h('div', { class: 'error' }, 'The gateway no longer accepts the token this tab signed in with (it was changed, or the gateway restarted with another). Sign in again.'));
  }
  const button = h('button', { type: 'submit', id: 'login-submit', class: 'primary' }, 'Sign in');
  // For password managers: the token is the password of a fixed user name.
  const user = h('input', { type: 'text', name: 'username', autocomplete: 'username', value: 'admin', hidden: true });
  const form = h('form', { id: 'login-form', class: 'card narrow login' }, user,
    h('h1', {}, 'Sign in'),
    h('p', {}, 'The web UI works through the management API and needs its admin token: the value of ',
      h('code', {}, 'SWITCHYARD_ADMIN_TOKEN'), ', else the one kept in the data directory (', h('code', {}, 'DIR/admin-token'),
      '), else the one the gateway logged once at start (the line with ', h('code', {}, 'admin_token='), ').'),
    h('label', { for: 'token' }, 'Admin token'), input, button, msg,
    h('p', { class: 'muted small' }, 'The token is kept in this browser tab only (sessionStorage) and sent to this gateway alone; closing the tab or signing out forgets it.'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    button.disabled = true;
    fill(msg, h('span', { class: 'muted' }, 'Checking…'));
    try {
      // Any admin route checks the token; this one is cheap.
      await api('/api/governance/virtual-keys?limit=1', { token, quiet401: true });
      session.set(token);
      go(next && !next.startsWith('#/login') ? next : '#/dashboard');
    } catch (e) {
      let text;
      if (e instanceof ApiError && e.status === 401) text = `The gateway refused this token (${e.code}). Check it and try again.`;
      else if (e instanceof ApiError && e.code === 'admin_disabled') text = 'The management API is off on this gateway, so there is nothing to sign in to.';
      fill(msg, text ? h('div', { class: 'error', role: 'alert' }, text) : errorBox(e));
      button.disabled = false;
      input.select();
    }
  });
  fill(main, form);
  input.focus();
}

whenUnauthorized(() => {
  session.clear();
  go('#/login?expired=1');
});

logout.addEventListener('click', () => {
  session.clear();
  go('#/login');
});

window.addEventListener('hashchange', render);
render();
