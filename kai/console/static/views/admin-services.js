// The hub's components on the node that answers (services:read): state, health, counters,
// and restart or stop where the component and the role allow it.

import { get, path, post } from '../api.js';
import { h, replace } from '../dom.js';
import { can } from '../session.js';
import { badge, confirmDialog, errorBox, notify } from '../ui.js';

function counters(values) {
  const entries = Object.entries(values ?? {});
  if (!entries.length) return '–';
  return h('ul', { class: 'counters' }, entries.map(([k, v]) => h('li', {}, h('span', { class: 'muted', text: `${k} ` }), String(v))));
}

export function servicesView(root) {
  const error = errorBox();
  const refresh = h('button', { type: 'button', class: 'secondary', text: 'Refresh' });
  const summary = h('div');
  const table = h('div');
  replace(root, h('div', { class: 'page-head' }, h('h1', { tabindex: -1, text: 'Services' }), refresh), error.el, summary, table);
  let gone = false;

  async function act(service, action, button) {
    if (action === 'stop') {
      const ok = await confirmDialog({
        title: `Stop ${service.name}?`,
        body: [h('p', { text: 'It stays stopped on this node until it is restarted.' })],
        confirm: 'Stop',
        danger: true,
      });
      if (!ok) return;
    }
    button.disabled = true;
    error.clear();
    try {
      const answer = await post(path`/api/services/${service.name}/${action}`);
      notify(`${service.name}: ${answer.service.state}.`);
      await load();
    } catch (failure) {
      error.show(failure);
    } finally {
      button.disabled = false;
    }
  }

  function actionsFor(service) {
    const buttons = [];
    if (service.actions.includes('restart') && can('services:restart')) {
      const b = h('button', { type: 'button', class: 'secondary small', text: 'Restart', 'aria-label': `Restart ${service.name}` });
      b.addEventListener('click', () => act(service, 'restart', b));
      buttons.push(b);
    }
    if (service.actions.includes('stop') && can('services:stop') && service.state === 'running') {
      const b = h('button', { type: 'button', class: 'danger small', text: 'Stop', 'aria-label': `Stop ${service.name}` });
      b.addEventListener('click', () => act(service, 'stop', b));
      buttons.push(b);
    }
    return buttons.length ? h('div', { class: 'actions' }, buttons) : h('span', { class: 'muted', text: '–' });
  }

  async function load() {
    try {
      const answer = await get('/api/services');
      if (gone) return;
      error.clear();
      replace(
        summary,
        h(
          'dl',
          { class: 'facts card' },
          h('dt', { text: 'Node' }),
          h('dd', {}, h('code', { text: answer.node })),
          h('dt', { text: 'API' }),
          h('dd', {}, h('code', { text: answer.apiEndpoint })),
          h('dt', { text: 'Client WebSocket' }),
          h('dd', {}, h('code', { text: answer.webSocketEndpoint })),
          h('dt', { text: 'Socket messages' }),
          h('dd', { text: answer.activeWebSocketHandlers.join(', ') }),
          h('dt', { text: 'Routes' }),
          h('dd', {}, h('details', {}, h('summary', { text: `${answer.registeredRoutes.length} routes` }), h('ul', { class: 'routes' }, answer.registeredRoutes.map((r) => h('li', {}, h('code', { text: r })))))),
        ),
      );
      replace(
        table,
        h(
          'table',
          { class: 'table responsive' },
          h('caption', { class: 'visually-hidden', text: 'Services of this node' }),
          h('thead', {}, h('tr', {}, ['Service', 'Kind', 'State', 'Health', 'Counters', 'Actions'].map((t) => h('th', { scope: 'col', text: t })))),
          h(
            'tbody',
            {},
            answer.services.map((service) =>
              h(
                'tr',
                { dataset: { service: service.name } },
                h('th', { scope: 'row', 'data-label': 'Service', text: service.name }),
                h('td', { 'data-label': 'Kind', text: service.kind }),
                h('td', { 'data-label': 'State' }, badge(service.state, 'state')),
                h('td', { 'data-label': 'Health' }, badge(service.health, 'health')),
                h('td', { 'data-label': 'Counters' }, counters(service.counters)),
                h('td', { 'data-label': 'Actions' }, actionsFor(service)),
              ),
            ),
          ),
        ),
      );
    } catch (failure) {
      if (gone) return;
      replace(summary);
      replace(table);
      error.show(failure);
    }
  }

  refresh.addEventListener('click', load);
  load();
  return () => {
    gone = true;
  };
}
