// The audit log (system:admin): every permission decision and authentication event, filtered.

import { get } from '../api.js';
import { h, replace, time } from '../dom.js';
import { emptyState, errorBox, field, select } from '../ui.js';
import { isoFromLocal, pager } from './admin-common.js';

const PAGE = 50;

export function auditView(root) {
  const error = errorBox();
  const userId = h('input', { name: 'userId', maxlength: 36, autocomplete: 'off' });
  const permission = h('input', { name: 'permission', maxlength: 60, autocomplete: 'off', placeholder: 'agents:read' });
  const decision = select('decision', [['', 'Any'], ['granted', 'Granted'], ['denied', 'Denied']], '');
  const kind = select('kind', [['', 'Any'], ['permission', 'Permission checks'], ['auth', 'Authentication']], '');
  const start = h('input', { type: 'datetime-local', name: 'startTime', step: 1 });
  const end = h('input', { type: 'datetime-local', name: 'endTime', step: 1 });
  const filters = h(
    'form',
    { class: 'filters', role: 'search', 'aria-label': 'Filter the audit log' },
    field('User id', userId),
    field('Permission or event', permission),
    field('Decision', decision),
    field('Kind', kind),
    field('From', start),
    field('To', end),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'secondary', text: 'Apply filters' })),
  );
  const table = h('div');
  const pages = pager(() => load());
  replace(root, h('div', { class: 'page-head' }, h('h1', { tabindex: -1, text: 'Audit log' })), error.el, filters, table, pages.el);
  let gone = false;

  async function load() {
    try {
      const page = await get('/api/audit', {
        userId: userId.value.trim(),
        permission: permission.value.trim(),
        decision: decision.value,
        kind: kind.value,
        startTime: isoFromLocal(start),
        endTime: isoFromLocal(end),
        limit: PAGE,
        offset: pages.offset,
      });
      if (gone) return;
      error.clear();
      pages.update(page, PAGE);
      if (!page.events.length) {
        replace(table, emptyState('No audit entries match these filters.'));
        return;
      }
      replace(
        table,
        h(
          'table',
          { class: 'table responsive' },
          h('caption', { class: 'visually-hidden', text: 'Audit entries, newest first' }),
          h(
            'thead',
            {},
            h('tr', {}, ['Time', 'Kind', 'User', 'Permission / event', 'Resource', 'Decision', 'Client', 'Detail'].map((t) => h('th', { scope: 'col', text: t }))),
          ),
          h(
            'tbody',
            {},
            page.events.map((entry) =>
              h(
                'tr',
                {},
                h('td', { 'data-label': 'Time', text: time(entry.timestamp) }),
                h('td', { 'data-label': 'Kind', text: entry.kind }),
                h('td', { 'data-label': 'User' }, h('code', { text: entry.userId ?? '–' })),
                h('td', { 'data-label': 'Permission / event', text: entry.permission }),
                h('td', { 'data-label': 'Resource', text: entry.resource ?? '–' }),
                h('td', { 'data-label': 'Decision' }, h('span', { class: entry.granted ? 'ok' : 'bad', text: entry.granted ? 'granted' : 'denied' })),
                h('td', { 'data-label': 'Client', text: entry.clientIp ?? '–' }),
                h('td', { 'data-label': 'Detail', text: entry.detail ?? '' }),
              ),
            ),
          ),
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
