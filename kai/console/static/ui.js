// Small pieces every page uses: labelled fields, badges, progress bars, notices, error boxes,
// confirmation dialogs and copy buttons.

import { describe } from './errors.js';
import { h, percent, replace, uid } from './dom.js';

/** A label and its control, tied by id; `hint` is read out with the control. */
export function field(labelText, control, hint = null) {
  const id = control.id || uid('f');
  control.id = id;
  const parts = [h('label', { for: id, text: labelText }), control];
  if (hint) {
    const hintId = `${id}-hint`;
    control.setAttribute('aria-describedby', hintId);
    parts.push(h('small', { id: hintId, class: 'hint', text: hint }));
  }
  return h('div', { class: 'field' }, parts);
}

export function select(name, options, value) {
  return h(
    'select',
    { name },
    options.map(([optionValue, text]) =>
      h('option', { value: optionValue, selected: optionValue === value, text }),
    ),
  );
}

export function badge(value, kind = 'status') {
  return h('span', { class: `badge ${kind}-${value ?? 'unknown'}`, text: value ?? 'unknown' });
}

/** A native progress bar with its percentage written beside it. */
export function progress(label) {
  const bar = h('progress', { max: 100, value: 0, 'aria-label': label });
  const text = h('span', { class: 'progress-text', text: '0%' });
  const el = h('div', { class: 'progress' }, bar, text);
  return {
    el,
    set(fraction) {
      const clamped = Math.max(0, Math.min(1, fraction ?? 0));
      bar.value = Math.round(clamped * 100);
      text.textContent = percent(clamped);
    },
  };
}

/** A place for a view's error: empty until `show(error)`. */
export function errorBox() {
  const el = h('div', { class: 'error', role: 'alert', hidden: true });
  return {
    el,
    show(error) {
      replace(el, typeof error === 'string' ? error : describe(error));
      el.hidden = false;
    },
    clear() {
      replace(el);
      el.hidden = true;
    },
  };
}

export function emptyState(text) {
  return h('p', { class: 'empty', text });
}

/** A short, polite message at the bottom of the screen. */
export function notify(text, kind = 'info') {
  const region = document.getElementById('notices');
  if (!region) return;
  const note = h('div', { class: `notice notice-${kind}`, text });
  region.append(note);
  setTimeout(() => note.remove(), 6000);
}

/**
 * A modal confirmation: resolves with the values of its form when confirmed, or null.
 * `body` is a list of nodes (text, fields) shown above the buttons.
 */
export function confirmDialog({ title, body = [], confirm = 'Confirm', danger = false }) {
  return new Promise((resolve) => {
    const titleId = uid('dlg');
    const form = h('form', { method: 'dialog', class: 'stack' });
    const cancel = h('button', { type: 'button', class: 'secondary', text: 'Cancel' });
    const ok = h('button', { type: 'submit', class: danger ? 'danger' : 'primary', text: confirm });
    const dialog = h(
      'dialog',
      { 'aria-labelledby': titleId, class: 'dialog' },
      form,
    );
    let answer = null;
    form.append(h('h2', { id: titleId, text: title }), ...body, h('div', { class: 'actions' }, cancel, ok));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      answer = Object.fromEntries(new FormData(form).entries());
      for (const box of form.querySelectorAll('input[type=checkbox]')) answer[box.name] = box.checked;
      dialog.close();
    });
    cancel.addEventListener('click', () => dialog.close());
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(answer);
    });
    document.body.append(dialog);
    dialog.showModal();
    // A destructive question starts on Cancel, so that Enter alone never destroys anything.
    (form.querySelector('input:not([type=checkbox])') ?? (danger ? cancel : ok)).focus();
  });
}

/** A button that copies `getText()` and says so. */
export function copyButton(getText, label = 'Copy') {
  const button = h('button', { type: 'button', class: 'secondary', text: label });
  button.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(getText());
      button.textContent = 'Copied';
    } catch {
      button.textContent = 'Select and copy by hand';
    }
    setTimeout(() => {
      button.textContent = label;
    }, 2000);
  });
  return button;
}

/** Read a JSON object from a textarea; throws a readable error. */
export function parseObject(text, what = 'Parameters') {
  const trimmed = text.trim();
  if (!trimmed) return {};
  let value;
  try {
    value = JSON.parse(trimmed);
  } catch (error) {
    throw new Error(`${what} must be JSON: ${error.message}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new Error(`${what} must be a JSON object, like {"key": "value"}`);
  }
  return value;
}

/** Disable a form's controls while `work` runs. */
export async function busy(form, work) {
  const controls = [...form.querySelectorAll('button, input, select, textarea')].filter((c) => !c.disabled);
  for (const control of controls) control.disabled = true;
  form.setAttribute('aria-busy', 'true');
  try {
    return await work();
  } finally {
    for (const control of controls) control.disabled = false;
    form.removeAttribute('aria-busy');
  }
}

const CONNECTION = {
  idle: 'Not connected',
  connecting: 'Connecting…',
  live: 'Live',
  reconnecting: 'Reconnecting…',
  closed: 'Disconnected',
  ended: 'Session ended',
};

/** The calm live / reconnecting indicator of a page watching a socket. */
export function connectionIndicator() {
  const text = h('span', { class: 'connection-text', text: CONNECTION.connecting });
  const detail = h('span', { class: 'connection-detail' });
  const el = h(
    'div',
    { class: 'connection', role: 'status', 'aria-live': 'polite', dataset: { state: 'connecting' } },
    h('span', { class: 'dot', 'aria-hidden': 'true' }),
    text,
    detail,
  );
  return {
    el,
    set(state, why = '') {
      el.dataset.state = state;
      text.textContent = CONNECTION[state] ?? state;
      detail.textContent = state === 'live' || !why ? '' : ` (${why})`;
    },
  };
}
