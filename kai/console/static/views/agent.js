// One agent's page: its state, a prompt box, commands, tasks, files and logs, all live over the
// agent's socket, which reconnects by itself and resumes where it stopped.

import { get, path } from '../api.js';
import { h, replace } from '../dom.js';
import { can, expire } from '../session.js';
import { AgentSocket } from '../socket.js';
import { badge, connectionIndicator, errorBox, notify } from '../ui.js';
import { agentActions } from './agent-actions.js';
import { commandPanel } from './agent-command.js';
import { filesPanel } from './agent-files.js';
import { logsPanel } from './agent-logs.js';
import { promptPanel } from './agent-prompt.js';
import { statusPanel } from './agent-status.js';
import { tasksPanel } from './agent-tasks.js';

const METRICS_EVERY = 5000;
export function agentView(root, [agentId]) {
  const error = errorBox();
  const title = h('h1', { tabindex: -1, text: 'Agent' });
  const badges = h('span', { class: 'badges' });
  const connection = connectionIndicator();
  const actions = h('div');
  const description = h('p', { class: 'muted description' });
  const grid = h('div', { class: 'agent-grid' });
  replace(
    root,
    h('p', { class: 'crumbs' }, h('a', { href: '#/agents', text: '← All agents' })),
    h('div', { class: 'page-head' }, h('div', { class: 'title-row' }, title, badges), connection.el, actions),
    description,
    error.el,
    grid,
  );

  let agent = null;
  let gone = false;
  let socket = null;
  let statusFetch = null;
  const status = statusPanel();
  const panels = [];

  let actionsFor = null;
  const handlers = {
    onChanged: () => fetchAgent().catch((f) => error.show(f)),
    onDeleted: () => location.assign('#/agents'),
    onError: (failure) => error.show(failure),
  };

  function header() {
    title.textContent = agent.name;
    if (actionsFor !== agent.name) {
      actionsFor = agent.name; // the buttons are labelled with the name
      replace(actions, agentActions(agent, handlers));
    }
    replace(badges, badge(agent.status), ' ', badge(agent.health, 'health'));
    description.textContent = agent.description ?? '';
    description.hidden = !agent.description;
  }

  async function fetchAgent() {
    const next = await get(path`/api/agents/${agentId}`);
    if (gone) return null;
    agent = next;
    header();
    status.update(agent);
    for (const panel of panels) panel.setAgent?.(agent);
    return agent;
  }

  function refetchSoon() {
    clearTimeout(statusFetch);
    statusFetch = setTimeout(() => fetchAgent().catch(() => {}), 300);
  }

  function build() {
    const context = { agentId, allowed: can('agents:command') };
    const prompt = promptPanel(context);
    const command = commandPanel(context);
    const tasks = tasksPanel(context);
    const files = filesPanel({ agentId, allowed: can('files:upload'), canRead: can('agents:read') });
    const logs = logsPanel({ agentId });
    panels.push(prompt, command, tasks, files, logs);
    status.el.classList.add('panel-status');
    prompt.el.classList.add('panel-prompt');
    tasks.el.classList.add('panel-tasks');
    command.el.classList.add('panel-command');
    files.el.classList.add('panel-files');
    replace(
      grid,
      h('div', { class: 'col-main' }, prompt.el, tasks.el),
      h('div', { class: 'col-side' }, status.el, command.el, files.el),
      h('div', { class: 'col-wide' }, logs.el),
    );
    for (const panel of panels) panel.setAgent?.(agent);

    let loaded = false;
    const reloadAll = () => {
      for (const panel of panels) panel.reload?.();
    };
    socket = new AgentSocket(agentId, {
      onState: (state, why) => {
        connection.set(state, why);
        if (state === 'live' && !loaded) {
          loaded = true;
          reloadAll();
        }
      },
      onSessionEnded: () => expire('Your session has ended. Please sign in again.'),
    });
    socket.on('*', () => {
      connection.el.dataset.seq = String(socket.seq ?? '');
      connection.el.dataset.epoch = socket.epoch ?? '';
    });
    socket.on('status_update', (event) => {
      if (!agent) return;
      const changed = event.status !== agent.status;
      agent.status = event.status;
      agent.health = event.health;
      header();
      status.status(event);
      if (changed || event.snapshot) refetchSoon();
    });
    socket.on('resync_required', () => {
      notify('Some live events were no longer available; the page was reloaded from the hub.');
      reloadAll();
    });
    socket.on('log_stream', logs.entry);
    socket.on('stream_chunk', prompt.chunk);
    socket.on('task_update', (event) => {
      tasks.task(event);
      if (event.status !== 'queued' && event.status !== 'running') refetchSoon();
    });
    socket.on('upload_progress', files.progress);
    socket.start();
  }

  const metrics = setInterval(() => {
    if (agent && document.visibilityState === 'visible') fetchAgent().catch(() => {});
  }, METRICS_EVERY);

  fetchAgent()
    .then((found) => {
      if (found) build();
    })
    .catch((failure) => {
      connection.set('closed', '');
      connection.el.hidden = true;
      title.textContent = failure.status === 404 ? 'Agent not found' : 'Agent';
      error.show(failure);
    });

  return () => {
    gone = true;
    clearInterval(metrics);
    clearTimeout(statusFetch);
    socket?.stop();
    status.destroy();
    for (const panel of panels) panel.destroy?.();
  };
}
