// Teams: groups of your agents that work together (docs/teams.md), and one team's channel,
// live over /ws/teams/{id}, resumed by itself after a drop like an agent's socket.

import { del, get, path, post } from '../api.js';
import { clock, h, json, replace, uid } from '../dom.js';
import { can, expire } from '../session.js';
import { AgentSocket } from '../socket.js';
import { busy, confirmDialog, connectionIndicator, emptyState, errorBox, field } from '../ui.js';

const KEPT_MESSAGES = 500;
const TEAM_GONE = new Map([
  [4003, 'Your access to this team was revoked.'],
  [4004, 'This team was deleted.'],
]);

function createForm(agents, onCreated, onCancel) {
  const error = errorBox();
  const name = h('input', { name: 'name', required: true, maxlength: 200, autocomplete: 'off' });
  const description = h('input', { name: 'description', maxlength: 4000, autocomplete: 'off' });
  const boxes = agents.map((agent) => {
    const box = h('input', { type: 'checkbox', name: 'member', value: agent.id, id: uid('member') });
    return h('div', { class: 'check' }, box, h('label', { for: box.id, text: agent.name }));
  });
  const titleId = uid('new-team');
  const form = h(
    'form',
    { class: 'card stack', 'aria-labelledby': titleId },
    h('h2', { id: titleId, text: 'New team' }),
    error.el,
    field('Name', name),
    field('Description (optional)', description),
    h(
      'fieldset',
      { class: 'stack' },
      h('legend', { text: 'Members' }),
      boxes.length ? boxes : h('p', { class: 'muted', text: 'You have no agents to add yet.' }),
    ),
    h(
      'div',
      { class: 'actions' },
      h('button', { type: 'button', class: 'secondary', text: 'Cancel', onclick: onCancel }),
      h('button', { type: 'submit', class: 'primary', text: 'Create team' }),
    ),
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.clear();
    const agentIds = [...form.querySelectorAll('input[name=member]:checked')].map((box) => box.value);
    await busy(form, async () => {
      try {
        onCreated(
          await post('/api/teams', {
            name: name.value.trim(),
            description: description.value.trim() || null,
            agentIds,
          }),
        );
      } catch (failure) {
        error.show(failure);
      }
    });
  });
  setTimeout(() => name.focus());
  return form;
}

export function teamsView(root) {
  const error = errorBox();
  const area = h('div');
  const list = h('div', { 'aria-busy': 'true' });
  let gone = false;
  let agents = [];

  const newButton = can('agents:update')
    ? h('button', { type: 'button', class: 'primary', text: 'New team' })
    : null;
  newButton?.addEventListener('click', () => {
    replace(
      area,
      createForm(
        agents,
        (team) => location.assign(`#/teams/${encodeURIComponent(team.id)}`),
        () => {
          replace(area);
          newButton.focus();
        },
      ),
    );
  });

  async function load() {
    try {
      const [teams, mine] = await Promise.all([get('/api/teams'), get('/api/agents')]);
      if (gone) return;
      agents = mine.agents;
      const names = new Map(agents.map((agent) => [agent.id, agent.name]));
      list.removeAttribute('aria-busy');
      if (!teams.teams.length) {
        replace(list, emptyState('No teams yet. A team groups some of your agents; its members share a channel.'));
        return;
      }
      replace(
        list,
        h(
          'table',
          { class: 'table responsive' },
          h('caption', { class: 'visually-hidden', text: 'Your teams' }),
          h('thead', {}, h('tr', {}, ['Team', 'Members', 'Description'].map((t) => h('th', { scope: 'col', text: t })))),
          h(
            'tbody',
            {},
            teams.teams.map((team) =>
              h(
                'tr',
                {},
                h('td', { 'data-label': 'Team' }, h('a', { href: `#/teams/${encodeURIComponent(team.id)}`, text: team.name })),
                h('td', { 'data-label': 'Members', text: team.agentIds.map((id) => names.get(id) ?? id).join(', ') || '–' }),
                h('td', { 'data-label': 'Description', text: team.description ?? '' }),
              ),
            ),
          ),
        ),
      );
    } catch (failure) {
      if (!gone) error.show(failure);
    }
  }

  replace(
    root,
    h('div', { class: 'page-head' }, h('div', { class: 'title-row' }, h('h1', { tabindex: -1, text: 'Teams' })), newButton),
    error.el,
    area,
    list,
  );
  load();
  return () => {
    gone = true;
  };
}

function messageRow(message) {
  const data = h('pre', { class: 'output' });
  data.textContent = json(message.data); // agent output: always text, never markup
  return h(
    'li',
    { class: 'log-row', dataset: { seq: String(message.seq) } },
    h('time', { datetime: message.timestamp, text: clock(message.timestamp) }),
    h('span', { class: 'log-level', text: message.topic }),
    h('span', { class: 'log-logger', text: message.fromName ?? message.fromAgentId }),
    data,
  );
}

export function teamView(root, [teamId]) {
  const error = errorBox();
  const title = h('h1', { tabindex: -1, text: 'Team' });
  const connection = connectionIndicator();
  const members = h('ul', { class: 'stack' });
  const messages = h('ol', { class: 'log-list', 'aria-live': 'polite', 'aria-label': 'Team channel' });
  const empty = emptyState('Nothing on the channel yet. Messages the members publish appear here as they come.');
  const actions = h('div', { class: 'actions' });
  let socket = null;
  let gone = false;

  replace(
    root,
    h('p', { class: 'crumbs' }, h('a', { href: '#/teams', text: '← All teams' })),
    h('div', { class: 'page-head' }, h('div', { class: 'title-row' }, title), connection.el, actions),
    error.el,
    h(
      'div',
      { class: 'agent-grid' },
      h('section', { class: 'card col-side', 'aria-label': 'Members' }, h('h2', { text: 'Members' }), members),
      h(
        'section',
        { class: 'card col-main', 'aria-label': 'Channel' },
        h('h2', { text: 'Channel' }),
        h('div', { class: 'log-scroll' }, empty, messages),
      ),
    ),
  );

  function drawMembers(agentIds, names) {
    replace(
      members,
      agentIds.length
        ? agentIds.map((id) => h('li', {}, h('a', { href: `#/agents/${encodeURIComponent(id)}`, text: names.get(id) ?? id })))
        : h('li', { class: 'muted', text: 'No members.' }),
    );
  }

  async function load() {
    const [team, mine] = await Promise.all([get(path`/api/teams/${teamId}`), get('/api/agents')]);
    if (gone) return;
    title.textContent = team.name;
    const names = new Map(mine.agents.map((agent) => [agent.id, agent.name]));
    drawMembers(team.agentIds, names);
    if (can('agents:update')) {
      const remove = h('button', { type: 'button', class: 'danger', text: `Delete team ${team.name}` });
      remove.addEventListener('click', async () => {
        const answer = await confirmDialog({
          title: `Delete the team ${team.name}?`,
          body: [h('p', { text: 'Its agents stay; the grants that name the team go with it.' })],
          confirm: 'Delete team',
          danger: true,
        });
        if (!answer) return;
        try {
          await del(path`/api/teams/${teamId}`);
          location.assign('#/teams');
        } catch (failure) {
          error.show(failure);
        }
      });
      replace(actions, remove);
    }
    socket = new AgentSocket(teamId, {
      path: `/ws/teams/${encodeURIComponent(teamId)}`,
      giveUp: TEAM_GONE,
      onState: (state, why) => connection.set(state, why),
      onSessionEnded: () => expire('Your session has ended. Please sign in again.'),
    });
    socket.on('team_status', (snapshot) => drawMembers(snapshot.agentIds ?? [], names));
    socket.on('team_message', (message) => {
      empty.hidden = true;
      messages.append(messageRow(message));
      while (messages.children.length > KEPT_MESSAGES) messages.firstElementChild.remove();
    });
    socket.start();
  }

  load().catch((failure) => {
    connection.set('closed', '');
    error.show(failure);
  });
  return () => {
    gone = true;
    socket?.stop();
  };
}
