// Talking to the agent: a prompt, and its answer streaming in piece by piece as the agent's
// socket relays it. Pieces that a reconnect could not replay are read back from the stream's
// Server-Sent Events. The answer is text, always.

import { path, post, readStream } from '../api.js';
import { describe } from '../errors.js';
import { h, replace } from '../dom.js';
import { busy, emptyState, errorBox, field } from '../ui.js';

const EARLY_LIMIT = 500; // chunks kept for a stream whose id the hub has not answered with yet

export function promptPanel({ agentId, allowed }) {
  const error = errorBox();
  const prompt = h('textarea', { name: 'prompt', rows: 3, required: true, maxlength: 200000 });
  const send = h('button', { type: 'submit', class: 'primary', text: 'Send' });
  const transcript = h('ol', { class: 'transcript', 'aria-label': 'Conversation' });
  const empty = emptyState('Ask the agent something; its answer appears here as it is written.');
  const form = h(
    'form',
    { class: 'stack' },
    error.el,
    field('Your prompt', prompt, 'Ctrl+Enter sends.'),
    h('div', { class: 'actions' }, send),
  );
  const el = h(
    'section',
    { class: 'card', 'aria-labelledby': 'prompt-title' },
    h('h2', { id: 'prompt-title', text: 'Prompt' }),
    allowed ? form : h('p', { class: 'muted', text: 'Your role may not send prompts.' }),
    empty,
    transcript,
  );

  const streams = new Map();
  const early = new Map();
  let pending = 0;

  function setStatus(stream, text, kind = '') {
    stream.status.textContent = text;
    stream.status.className = `stream-status ${kind}`;
  }

  function finish(stream, status, problem) {
    if (stream.done) return;
    stream.done = true;
    stream.cancel.hidden = true;
    stream.answer.setAttribute('aria-busy', 'false');
    stream.item.dataset.status = status;
    if (status === 'completed') setStatus(stream, 'Done', 'ok');
    else if (status === 'cancelled') setStatus(stream, 'Cancelled', 'muted');
    else setStatus(stream, `Failed: ${problem ?? 'the agent stopped answering'}`, 'bad');
  }

  function apply(stream, event) {
    if (stream.done) return;
    if (event.done) {
      if (event.index > stream.next) {
        fill(stream); // the end came past chunks this page never saw
        return;
      }
      finish(stream, event.status, event.error);
      return;
    }
    if (event.index < stream.next) return; // already shown
    if (event.index > stream.next) {
      fill(stream);
      return;
    }
    stream.answer.append(document.createTextNode(event.chunk));
    stream.next += 1;
    setStatus(stream, 'Answering…');
  }

  async function fill(stream) {
    if (stream.filling || stream.done) return;
    stream.filling = true;
    try {
      await readStream(stream.id, {
        from: stream.next,
        onEvent: ({ event, data }) => {
          if (event === 'chunk') apply(stream, { index: data.index, chunk: data.chunk });
          else if (event === 'end') finish(stream, data.status, data.error);
        },
      });
    } catch (failure) {
      setStatus(stream, `Could not read the rest of the answer: ${describe(failure)}`, 'bad');
    } finally {
      stream.filling = false;
    }
  }

  async function cancel(stream) {
    stream.cancel.disabled = true;
    try {
      await post(path`/api/streams/${stream.id}/cancel`);
    } catch (failure) {
      if (failure.status !== 409) setStatus(stream, describe(failure), 'bad');
    } finally {
      stream.cancel.disabled = false;
    }
  }

  function exchange(text) {
    const answer = h('div', { class: 'answer', 'aria-live': 'polite', 'aria-busy': 'true' });
    const status = h('p', { class: 'stream-status', text: 'Waiting for the agent…' });
    const cancelButton = h('button', { type: 'button', class: 'secondary small', text: 'Stop' });
    const item = h(
      'li',
      { class: 'exchange' },
      h('p', { class: 'you' }, h('span', { class: 'who-label', text: 'You' }), h('span', { class: 'prompt-text', text })),
      h('div', { class: 'agent-says' }, h('span', { class: 'who-label', text: 'Agent' }), answer),
      h('div', { class: 'stream-foot' }, status, cancelButton),
    );
    transcript.append(item);
    empty.hidden = true;
    return { item, answer, status, cancel: cancelButton };
  }

  async function submit() {
    error.clear();
    const text = prompt.value;
    if (!text.trim()) return;
    const parts = exchange(text);
    pending += 1;
    await busy(form, async () => {
      try {
        const opened = await post(path`/api/agents/${agentId}/stream-prompt`, { prompt: text });
        const stream = { ...parts, id: opened.streamId, next: 0, done: false, filling: false };
        parts.item.dataset.streamId = opened.streamId;
        streams.set(opened.streamId, stream);
        parts.cancel.addEventListener('click', () => cancel(stream));
        for (const event of early.get(opened.streamId) ?? []) apply(stream, event);
        prompt.value = '';
      } catch (failure) {
        parts.item.remove();
        empty.hidden = transcript.childElementCount > 0;
        error.show(failure);
      }
    });
    pending -= 1;
    if (!pending) early.clear();
    prompt.focus();
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    submit();
  });
  prompt.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      submit();
    }
  });

  return {
    el,
    chunk(event) {
      const stream = streams.get(event.streamId);
      if (stream) {
        apply(stream, event);
      } else if (pending) {
        // The chunks can overtake the answer that names their stream: keep them until it comes.
        const kept = early.get(event.streamId) ?? [];
        if (kept.length < EARLY_LIMIT) kept.push(event);
        early.set(event.streamId, kept);
      }
    },
    reload() {
      // After a break in the events, read what was missed from each unfinished stream.
      for (const stream of streams.values()) if (!stream.done) fill(stream);
    },
    destroy() {
      replace(transcript);
    },
  };
}
