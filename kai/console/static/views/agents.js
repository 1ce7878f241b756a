// Your agents (every agent, for an admin): live status and health, and creating one.

import { get, post } from '../api.js';
import { h, relative, replace, uid } from '../dom.js';
import { can } from '../session.js';
import { AgentSocket } from '../socket.js';
import { badge, busy, copyButton, emptyState, errorBox, field } from '../ui.js';
import { agentActions } from './agent-actions.js';

const MAX_WATCHED = 50; // beyond this, the list refreshes by polling only
const REFRESH_EVERY = 30_000;

function hubSocketUrl() {
  return `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/ws/agent`;
}

function tokenPanel(created, onDone) {
  const titleId = uid('created');
  const token = created.agentToken;
  // The token goes in the environment (or a file: --token-file), never argv, where ps shows it.
  const command = `KAI_AGENT_TOKEN=${token} kai agent run your_module:agent --url ${hubSocketUrl()}`;
  const done = h('button', { type: 'button', class: 'primary', text: 'I have copied the token' });
  const panel = h(
    'section',
    { class: 'card token-panel', 'aria-labelledby': titleId },
    h('h2', { id: titleId, tabindex: -1, text: `Agent ${created.agent.name} created` }),
    h('p', {
      text: 'This is its token. It is shown this once: copy it now. Whoever holds it can connect as this agent.',
    }),
    h('div', { class: 'copy-row' }, h('code', { class: 'token', text: token }), copyButton(() => token, 'Copy token')),
    h('p', { text: 'Run your agent with it in KAI_AGENT_TOKEN or a file given as --token-file (see docs/writing-agents.md):' }),
    h('div', { class: 'copy-row' }, h('code', { class: 'command', text: command }), copyButton(() => command, 'Copy command')),
    h('div', { class: 'actions' }, done),
  );
  done.addEventListener('click', onDone);
  return panel;
}

function createForm(onCreated, onCancel) {
  const error = errorBox();
  const name = h('input', { name: 'name', required: true, maxlength: 200, autocomplete: 'off' });
  const description = h('input', { name: 'description', maxlength: 4000, autocomplete: 'off' });
  const type = h('input', { name: 'type', value: 'generic', maxlength: 60, autocomplete: 'off' });
  const cancel = h('button', { type: 'button', class: 'secondary', text: 'Cancel', onclick: onCancel });
  const titleId = uid('new');
  const form = h(
    'form',
    { class: 'card stack', 'aria-labelledby': titleId },
    h('h2', { id: titleId, text: 'New agent' }),
    error.el,
    field('Name', name),
    field('Description (optional)', description),
    field('Type', type),
    h('div', { class: 'actions' }, cancel, h('button', { type: 'submit', class: 'primary', text: 'Create agent' })),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.clear();
    await busy(form, async () => {
      try {
        const created = await post('/api/agents', {
          agentData: {
            name: name.value.trim(),
            description: description.value.trim() || null,
            type: type.value.trim() || 'generic',
          },
        });
        onCreated(created);
      } catch (failure) {
        error.show(failure);
      }
    });
  });
  setTimeout(() => name.focus());
  return form;
}

export function agentsView(root) {
  const error = errorBox();
  const area = h('div');
  const list = h('div', { class: 'agent-list', 'aria-busy': 'true' });
  const watchers = new Map();
  const rows = new Map();
  let agents = [];
  let drawn = null;
  let gone = false;

  const newButton = can('agents:create')
    ? h('button', { type: 'button', class: 'primary', text: 'New agent' })
    : null;
  newButton?.addEventListener('click', () => {
    replace(
      area,
      createForm(
        (created) => {
          const panel = tokenPanel(created, () => {
            replace(area);
            newButton.focus();
          });
          replace(area, panel);
          panel.querySelector('h2').focus();
          load();
        },
        () => replace(area),
      ),
    );
  });

  const handlers = {
    onChanged: () => load(),
    onDeleted: () => load(),
    onError: (failure) => error.show(failure),
  };

  function row(agent) {
    const status = h('td', { 'data-label': 'Status' }, badge(agent.status));
    const health = h('td', { 'data-label': 'Health' }, badge(agent.health, 'health'));
    const activity = h('td', { 'data-label': 'Last activity', text: relative(agent.lastActivity) });
    rows.set(agent.id, { status, health, activity, agent });
    return h(
      'tr',
      { dataset: { agentId: agent.id } },
      h('th', { scope: 'row', 'data-label': 'Agent' }, h('a', { href: `#/agents/${encodeURIComponent(agent.id)}`, text: agent.name })),
      status,
      health,
      h('td', { 'data-label': 'Type', text: agent.type }),
      activity,
      h('td', { 'data-label': 'Actions' }, agentActions(agent, handlers)),
    );
  }

  function update() {
    for (const agent of agents) {
      const cells = rows.get(agent.id);
      Object.assign(cells.agent, agent);
      replace(cells.status, badge(agent.status));
      replace(cells.health, badge(agent.health, 'health'));
      cells.activity.textContent = relative(agent.lastActivity);
    }
  }

  function draw() {
    // Redraw only when the rows themselves change, so that focus and open dialogs survive.
    const shape = JSON.stringify(agents.map((a) => [a.id, a.name, a.type]));
    if (shape === drawn) {
      update();
      return;
    }
    drawn = shape;
    rows.clear();
    list.setAttribute('aria-busy', 'false');
    if (!agents.length) {
      replace(
        list,
        emptyState(
          can('agents:create')
            ? 'No agents yet. Create one: you get its token, and the command that runs it.'
            : 'No agents yet.',
        ),
      );
      return;
    }
    replace(
      list,
      h(
        'table',
        { class: 'table responsive' },
        h('caption', { class: 'visually-hidden', text: 'Your agents' }),
        h(
          'thead',
          {},
          h('tr', {}, ['Agent', 'Status', 'Health', 'Type', 'Last activity', 'Actions'].map((t) => h('th', { scope: 'col', text: t }))),
        ),
        h('tbody', {}, agents.map(row)),
      ),
    );
  }

  function watch() {
    const wanted = new Set(agents.slice(0, MAX_WATCHED).map((a) => a.id));
    for (const [id, socket] of watchers) {
      if (!wanted.has(id)) {
        socket.stop();
        watchers.delete(id);
      }
    }
    for (const id of wanted) {
      if (watchers.has(id)) continue;
      const socket = new AgentSocket(id);
      socket.on('status_update', (event) => {
        const cells = rows.get(id);
        if (!cells) return;
        cells.agent.status = event.status;
        cells.agent.health = event.health;
        replace(cells.status, badge(event.status));
        replace(cells.health, badge(event.health, 'health'));
      });
      watchers.set(id, socket.start());
    }
  }

  async function load() {
    try {
      const answer = await get('/api/agents');
      if (gone) return;
      agents = answer.agents;
      error.clear();
      draw();
      watch();
    } catch (failure) {
      if (!gone) error.show(failure);
    }
  }

  replace(
    root,
    h('div', { class: 'page-head' }, h('h1', { tabindex: -1, text: 'Agents' }), newButton),
    error.el,
    area,
    list,
  );
  list.append(h('p', { class: 'loading', text: 'Loading agents…' }));
  load();
  const timer = setInterval(load, REFRESH_EVERY);
  return () => {
    gone = true;
    clearInterval(timer);
    for (const socket of watchers.values()) socket.stop();
  };
}
