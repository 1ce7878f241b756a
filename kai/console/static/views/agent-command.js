// Running one of the agent's commands and reading its result.

import { path, post } from '../api.js';
import { h, json, replace, seconds } from '../dom.js';
import { busy, emptyState, errorBox, field, parseObject, select } from '../ui.js';

export function commandPanel({ agentId, allowed }) {
  const error = errorBox();
  const commandSlot = h('div');
  const params = h('textarea', { name: 'parameters', rows: 3, spellcheck: false, placeholder: '{"text": "hello"}' });
  const timeout = h('input', { type: 'number', name: 'timeout', min: 0.1, step: 'any', inputmode: 'decimal' });
  const result = h('div', { class: 'command-result', 'aria-live': 'polite' });
  const form = h(
    'form',
    { class: 'stack' },
    error.el,
    commandSlot,
    field('Parameters (JSON object)', params),
    field('Timeout in seconds (optional)', timeout),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', text: 'Run command' })),
  );
  const body = h('div');
  const el = h(
    'section',
    { class: 'card', 'aria-labelledby': 'command-title' },
    h('h2', { id: 'command-title', text: 'Command' }),
    body,
    result,
  );
  let command = null;
  let shown = null;

  function setAgent(agent) {
    const commands = agent.capabilities?.commands ?? [];
    // Redraw only when the commands change: the select may be in use.
    const key = JSON.stringify(commands);
    if (key === shown) return;
    shown = key;
    if (!allowed) {
      replace(body, h('p', { class: 'muted', text: 'Your role may not send commands.' }));
      return;
    }
    if (!commands.length) {
      replace(body, emptyState('This agent declares no commands (it may not have connected yet).'));
      return;
    }
    const previous = command?.value;
    command = select('command', commands.map((c) => [c, c]), commands.includes(previous) ? previous : commands[0]);
    replace(commandSlot, field('Command', command));
    if (!body.contains(form)) replace(body, form);
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.clear();
    let parameters;
    try {
      parameters = parseObject(params.value);
    } catch (failure) {
      error.show(failure.message);
      params.focus();
      return;
    }
    const request = { command: command.value, parameters };
    if (timeout.value) request.timeout = Number(timeout.value);
    replace(result, h('p', { class: 'muted', text: `Running ${request.command}…` }));
    await busy(form, async () => {
      try {
        const answer = await post(path`/api/agents/${agentId}/command`, request);
        const ok = answer.success;
        const agentError = answer.agentResponse?.error;
        replace(
          result,
          h('p', {
            class: ok ? 'ok' : 'bad',
            dataset: { outcome: ok ? 'succeeded' : 'failed' },
            text: ok
              ? `${request.command} succeeded in ${seconds(answer.executionTime)}`
              : `${request.command} failed: ${agentError ?? 'no reason given'}`,
          }),
          ok ? h('pre', { class: 'output', text: json(answer.result) }) : null,
        );
      } catch (failure) {
        replace(result);
        error.show(failure);
      }
    });
  });

  return { el, setAgent };
}
