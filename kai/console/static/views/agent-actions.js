// What can be done to an agent from its row or its page: rename, restart, delete.

import { del, path, post, put } from '../api.js';
import { h } from '../dom.js';
import { can } from '../session.js';
import { confirmDialog, field, notify } from '../ui.js';

async function rename(agent, { onChanged, onError }) {
  const name = h('input', { name: 'name', value: agent.name, required: true, maxlength: 200 });
  const answer = await confirmDialog({
    title: `Rename ${agent.name}`,
    body: [field('New name', name)],
    confirm: 'Rename',
  });
  if (!answer || !answer.name.trim() || answer.name.trim() === agent.name) return;
  try {
    const result = await put(path`/api/agents/${agent.id}`, { updates: { name: answer.name.trim() } });
    notify(`Renamed to ${result.agent.name}.`);
    onChanged?.(result.agent);
  } catch (error) {
    onError(error);
  }
}

async function restart(agent, button, { onChanged, onError }) {
  button.disabled = true;
  button.textContent = 'Restarting…';
  try {
    const result = await post(path`/api/agents/${agent.id}/restart`, {});
    if (result.success && result.restartTime !== null) {
      notify(`${agent.name} restarted in ${result.restartTime.toFixed(1)} s.`);
    } else {
      notify(`${agent.name} was asked to restart; it is ${result.currentStatus} for now.`);
    }
    onChanged?.();
  } catch (error) {
    onError(error);
  } finally {
    button.disabled = false;
    button.textContent = 'Restart';
  }
}

async function remove(agent, { onDeleted, onError }) {
  const backup = h('input', { type: 'checkbox', name: 'backup', checked: true, id: `backup-${agent.id}` });
  const answer = await confirmDialog({
    title: `Delete ${agent.name}?`,
    body: [
      h('p', {
        text:
          'The agent, its token, logs, tasks, streams and files are deleted, and its connection is closed.',
      }),
      h(
        'div',
        { class: 'check' },
        backup,
        h('label', { for: backup.id, text: 'Write a backup archive first (recommended)' }),
      ),
      h(
        'p',
        { class: 'hint' },
        'The hub keeps the archive in its data directory; ',
        h('code', { text: 'kai agents restore ARCHIVE' }),
        ' brings the agent back from it.',
      ),
    ],
    confirm: 'Delete agent',
    danger: true,
  });
  if (!answer) return;
  try {
    const result = await del(path`/api/agents/${agent.id}`, { backup: answer.backup ? 'true' : 'false' });
    notify(
      result.backupCreated
        ? `Deleted ${agent.name}; backup ${result.backupId ?? ''} written.`
        : `Deleted ${agent.name} (no backup).`,
    );
    onDeleted?.(agent);
  } catch (error) {
    onError(error);
  }
}

/** The buttons the signed-in user's role allows, for one agent. */
export function agentActions(agent, handlers) {
  const buttons = [];
  if (can('agents:update')) {
    buttons.push(
      h('button', {
        type: 'button',
        class: 'secondary',
        text: 'Rename',
        'aria-label': `Rename ${agent.name}`,
        onclick: () => rename(agent, handlers),
      }),
    );
    const restartButton = h('button', {
      type: 'button',
      class: 'secondary',
      text: 'Restart',
      'aria-label': `Restart ${agent.name}`,
    });
    restartButton.addEventListener('click', () => restart(agent, restartButton, handlers));
    buttons.push(restartButton);
  }
  if (can('agents:delete')) {
    buttons.push(
      h('button', {
        type: 'button',
        class: 'danger',
        text: 'Delete',
        'aria-label': `Delete ${agent.name}`,
        onclick: () => remove(agent, handlers),
      }),
    );
  }
  return h('div', { class: 'actions' }, buttons);
}
