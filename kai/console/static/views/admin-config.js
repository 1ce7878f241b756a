// Runtime configuration (config:read to see, config:update to change): the settings that
// change without a restart, where each value comes from, and a form to change them.

import { get, put } from '../api.js';
import { h, replace, time } from '../dom.js';
import { can } from '../session.js';
import { busy, errorBox, notify } from '../ui.js';

function control(name, value, editable) {
  const common = { name, id: `setting-${name}`, disabled: !editable, 'aria-describedby': `setting-${name}-about` };
  if (typeof value === 'number') return h('input', { ...common, type: 'number', step: 'any', value: String(value) });
  if (Array.isArray(value)) return h('input', { ...common, value: value.join(', '), placeholder: 'comma-separated' });
  return h('input', { ...common, value: value ?? '' });
}

function parse(input, original) {
  const text = input.value.trim();
  if (typeof original === 'number') {
    const number = Number(text);
    if (text === '' || !Number.isFinite(number)) throw new Error(`${input.name} must be a number`);
    return number;
  }
  if (Array.isArray(original)) return text ? text.split(',').map((s) => s.trim()).filter(Boolean) : [];
  return text;
}

export function configView(root) {
  const editable = can('config:update');
  const error = errorBox();
  const table = h('div');
  const save = h('button', { type: 'submit', class: 'primary', text: 'Save changes' });
  const form = h('form', { class: 'stack' }, table, editable ? h('div', { class: 'actions' }, save) : null);
  const about = h('p', {
      class: 'muted',
      text: editable
        ? 'These settings apply on every node at once, without a restart. Reset takes a setting back to its environment value or default.'
        : 'These settings apply on every node without a restart. Your role may read them, not change them.',
  });
  replace(
    root,
    h('div', { class: 'page-head' }, h('h1', { tabindex: -1, text: 'Runtime configuration' })),
    about,
    error.el,
    form,
  );
  let settings = {};
  let inputs = new Map();
  const problems = new Map();
  let gone = false;

  async function send(changes) {
    error.clear();
    for (const p of problems.values()) replace(p);
    try {
      const answer = await put('/api/config', { settings: changes });
      notify(answer.updatedFields.length ? `Saved: ${answer.updatedFields.join(', ')}.` : 'Nothing to change.');
      draw(answer.settings);
    } catch (failure) {
      error.show(failure);
      for (const item of failure.errors ?? []) {
        const name = String(item.field ?? '').split('.').pop();
        if (problems.has(name)) replace(problems.get(name), item.message);
      }
    }
  }

  function draw(next) {
    settings = next;
    inputs = new Map();
    problems.clear();
    const rows = Object.entries(settings).map(([name, s]) => {
      // Settings that guard accounts or the hub need system:admin besides config:update.
      const mine = editable && can(s.permission ?? 'config:update');
      const input = control(name, s.value, mine);
      inputs.set(name, input);
      const problem = h('p', { class: 'field-error', role: 'alert' });
      problems.set(name, problem);
      const reset =
        mine && s.source === 'runtime'
          ? h('button', { type: 'button', class: 'secondary small', text: 'Reset', 'aria-label': `Reset ${name}`, onclick: () => send({ [name]: null }) })
          : null;
      const source =
        s.source === 'runtime' ? `runtime, ${time(s.updatedAt)}${s.updatedBy ? ` by ${s.updatedBy}` : ''}` : s.source;
      return h(
        'tr',
        { dataset: { setting: name } },
        h('th', { scope: 'row', 'data-label': 'Setting' }, h('label', { for: input.id }, h('code', { text: name }))),
        h('td', { 'data-label': 'Value' }, input, problem),
        h('td', { 'data-label': 'Source', text: source }),
        h('td', { 'data-label': 'Meaning', id: `setting-${name}-about` }, s.description ?? '', ' ', h('code', { class: 'muted', text: s.environmentVariable })),
        h('td', { 'data-label': 'Actions' }, reset),
      );
    });
    replace(
      table,
      h(
        'table',
        { class: 'table responsive' },
        h('caption', { class: 'visually-hidden', text: 'Runtime settings' }),
        h('thead', {}, h('tr', {}, ['Setting', 'Value', 'Source', 'Meaning', ''].map((t) => h('th', { scope: 'col', text: t })))),
        h('tbody', {}, rows),
      ),
    );
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const changes = {};
    try {
      for (const [name, input] of inputs) {
        const value = parse(input, settings[name].value);
        if (JSON.stringify(value) !== JSON.stringify(settings[name].value)) changes[name] = value;
      }
    } catch (failure) {
      error.show(failure.message);
      return;
    }
    if (!Object.keys(changes).length) {
      notify('Nothing changed.');
      return;
    }
    await busy(form, () => send(changes));
  });

  get('/api/config')
    .then((answer) => {
      if (!gone) draw(answer.settings);
    })
    .catch((failure) => {
      if (!gone) {
        form.hidden = true;
        about.hidden = true;
        error.show(failure);
      }
    });
  return () => {
    gone = true;
  };
}
