// Accounts and their roles (system:admin): search, change a role, disable or enable.

import { get, path, put } from '../api.js';
import { h, replace, time } from '../dom.js';
import { user as me } from '../session.js';
import { emptyState, errorBox, field, notify, select } from '../ui.js';
import { pager } from './admin-common.js';

const ROLES = ['user', 'developer', 'agent', 'admin'];
const PAGE = 50;

export function usersView(root) {
  const error = errorBox();
  const q = h('input', { type: 'search', name: 'q', maxlength: 200, autocomplete: 'off' });
  const role = select('role', [['', 'Any role'], ...ROLES.map((r) => [r, r])], '');
  const filters = h(
    'form',
    { class: 'filters', role: 'search', 'aria-label': 'Filter users' },
    field('Email or name contains', q),
    field('Role', role),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'secondary', text: 'Filter' })),
  );
  const table = h('div');
  const pages = pager(() => load());
  replace(root, h('div', { class: 'page-head' }, h('h1', { tabindex: -1, text: 'Users and roles' })), error.el, filters, table, pages.el);
  let gone = false;

  async function change(account, updates, control) {
    error.clear();
    control.disabled = true;
    try {
      const answer = await put(path`/api/users/${account.id}`, updates);
      Object.assign(account, answer.user);
      notify(`${account.email}: ${answer.updatedFields.join(', ') || 'nothing'} changed.`);
    } catch (failure) {
      error.show(failure);
      load();
    } finally {
      control.disabled = false;
    }
  }

  function row(account) {
    const roleSelect = select('role', ROLES.map((r) => [r, r]), account.role);
    roleSelect.setAttribute('aria-label', `Role of ${account.email}`);
    roleSelect.addEventListener('change', () => change(account, { role: roleSelect.value }, roleSelect));
    const disabled = h('input', { type: 'checkbox', checked: account.disabled, 'aria-label': `${account.email} is disabled` });
    disabled.addEventListener('change', () => change(account, { disabled: disabled.checked }, disabled));
    const self = account.id === me()?.id;
    return h(
      'tr',
      { dataset: { userId: account.id } },
      h('th', { scope: 'row', 'data-label': 'Email' }, account.email, self ? h('span', { class: 'muted', text: ' (you)' }) : null),
      h('td', { 'data-label': 'Name', text: account.name ?? '–' }),
      h('td', { 'data-label': 'Role' }, roleSelect),
      h('td', { 'data-label': 'Disabled' }, disabled),
      h('td', { 'data-label': 'Verified', text: account.emailVerified ? 'yes' : 'no' }),
      h('td', { 'data-label': 'Created', text: time(account.createdAt) }),
    );
  }

  async function load() {
    try {
      const page = await get('/api/users', { q: q.value.trim(), role: role.value, limit: PAGE, offset: pages.offset });
      if (gone) return;
      error.clear();
      pages.update(page, PAGE);
      if (!page.users.length) {
        replace(table, emptyState('No account matches these filters.'));
        return;
      }
      replace(
        table,
        h(
          'table',
          { class: 'table responsive' },
          h('caption', { class: 'visually-hidden', text: 'Accounts, oldest first' }),
          h('thead', {}, h('tr', {}, ['Email', 'Name', 'Role', 'Disabled', 'Verified', 'Created'].map((t) => h('th', { scope: 'col', text: t })))),
          h('tbody', {}, page.users.map(row)),
        ),
      );
    } catch (failure) {
      if (gone) return;
      replace(table);
      error.show(failure);
    }
  }

  filters.addEventListener('submit', (event) => {
    event.preventDefault();
    pages.reset();
    load();
  });
  load();
  return () => {
    gone = true;
  };
}
