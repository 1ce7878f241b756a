// The console's shell: signs in (or picks up the kept session, or spends a magic link), draws
// the header and navigation, and routes by the URL's fragment to one view at a time.

import { h, replace } from './dom.js';
import { describe } from './errors.js';
import * as session from './session.js';
import { auditView } from './views/admin-audit.js';
import { configView } from './views/admin-config.js';
import { servicesView } from './views/admin-services.js';
import { usersView } from './views/admin-users.js';
import { agentView } from './views/agent.js';
import { agentsView } from './views/agents.js';
import { loginView } from './views/login.js';
import { teamsView, teamView } from './views/teams.js';

const ROUTES = [
  { pattern: /^\/agents$/, view: agentsView, title: 'Agents' },
  { pattern: /^\/agents\/([^/]+)$/, view: agentView, title: 'Agent' },
  { pattern: /^\/teams$/, view: teamsView, title: 'Teams' },
  { pattern: /^\/teams\/([^/]+)$/, view: teamView, title: 'Team' },
  { pattern: /^\/admin\/users$/, view: usersView, title: 'Users' },
  { pattern: /^\/admin\/audit$/, view: auditView, title: 'Audit log' },
  { pattern: /^\/admin\/services$/, view: servicesView, title: 'Services' },
  { pattern: /^\/admin\/config$/, view: configView, title: 'Configuration' },
];

// Admin pages appear only for a role holding their permission; the hub checks it again.
const NAV = [
  { href: '#/agents', text: 'Agents', permission: 'agents:read' },
  { href: '#/teams', text: 'Teams', permission: 'agents:read' },
  { href: '#/admin/users', text: 'Users', permission: 'system:admin' },
  { href: '#/admin/audit', text: 'Audit', permission: 'system:admin' },
  { href: '#/admin/services', text: 'Services', permission: 'services:read' },
  { href: '#/admin/config', text: 'Config', permission: 'config:read' },
];

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const account = document.getElementById('account');
let cleanup = null;
let message = null;
let booted = false;

function currentPath() {
  return location.hash.replace(/^#/, '') || '/agents';
}

function drawHeader() {
  const path = currentPath();
  if (!session.signedIn()) {
    replace(nav);
    replace(account);
    return;
  }
  const links = NAV.filter((item) => session.can(item.permission)).map((item) =>
    h('a', {
      href: item.href,
      text: item.text,
      'aria-current': path === item.href.slice(1) || path.startsWith(`${item.href.slice(1)}/`) ? 'page' : null,
    }),
  );
  replace(nav, links);
  const user = session.user();
  const signOut = h('button', { type: 'button', class: 'secondary', text: 'Sign out' });
  signOut.addEventListener('click', async () => {
    signOut.disabled = true;
    await session.signOut();
  });
  replace(
    account,
    h('span', { class: 'who' }, h('span', { class: 'who-email', text: user.email }), ' ', h('span', { class: 'who-role', text: user.role })),
    signOut,
  );
}

function render() {
  cleanup?.();
  cleanup = null;
  drawHeader();
  if (!session.signedIn()) {
    document.title = 'Sign in · kai';
    cleanup = loginView(main, { message });
    message = null;
    return;
  }
  const path = currentPath();
  if (path === '/login' || path === '/') {
    location.replace('#/agents');
    return;
  }
  for (const route of ROUTES) {
    const match = route.pattern.exec(path);
    if (match) {
      document.title = `${route.title} · kai`;
      cleanup = route.view(main, match.slice(1).map(decodeURIComponent)) ?? null;
      main.querySelector('h1')?.focus({ preventScroll: true });
      return;
    }
  }
  document.title = 'Not found · kai';
  replace(
    main,
    h('h1', { tabindex: -1, text: 'Page not found' }),
    h('p', {}, 'Nothing lives at this address. ', h('a', { href: '#/agents', text: 'Go to your agents' }), '.'),
  );
}

function unreachable(error) {
  replace(
    main,
    h('h1', { tabindex: -1, text: 'The hub did not answer' }),
    h('p', { class: 'error', role: 'alert', text: describe(error) }),
    h('button', { type: 'button', class: 'primary', text: 'Try again', onclick: boot }),
  );
}

async function landOnMagicLink() {
  // The token is in the fragment, which never reaches a server; drop it from the address bar
  // and the history before using it, so it is never seen or sent again.
  const token = new URLSearchParams(location.hash.slice(1)).get('token');
  history.replaceState(null, '', '/#/agents');
  if (!token) {
    message = 'This sign-in link is incomplete. Ask for a new one.';
    return;
  }
  try {
    await session.verifyMagicLink(token);
  } catch (error) {
    message = `${describe(error)}. Ask for a new link.`;
  }
}

async function boot() {
  replace(main, h('p', { class: 'loading', text: 'Loading…' }));
  try {
    if (location.pathname === '/login/magic') await landOnMagicLink();
    else await session.restore();
  } catch (error) {
    unreachable(error);
    return;
  }
  booted = true;
  render();
}

document.getElementById('skip').addEventListener('click', () => {
  (main.querySelector('h1') ?? main).focus();
});
session.onChange((change) => {
  message = change.reason ?? null;
  if (booted) render();
});
window.addEventListener('hashchange', () => {
  if (session.signedIn()) render();
});
boot();
