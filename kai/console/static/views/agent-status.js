// One agent's status, health, uptime, metrics and capabilities, kept current.

import { duration, h, relative, replace, seconds, time } from '../dom.js';
import { badge } from '../ui.js';

function row(term, value) {
  return [h('dt', { text: term }), h('dd', {}, value)];
}

export function statusPanel() {
  const list = h('dl', { class: 'facts' });
  const metrics = h('dl', { class: 'facts' });
  const capabilities = h('dl', { class: 'facts' });
  const el = h(
    'section',
    { class: 'card', 'aria-labelledby': 'status-title' },
    h('h2', { id: 'status-title', text: 'Status' }),
    list,
    h('h3', { text: 'Metrics' }),
    metrics,
    h('h3', { text: 'Capabilities' }),
    capabilities,
  );
  let agent = null;
  let fetchedAt = 0;
  const uptime = h('span', { dataset: { field: 'uptime' } });

  function tick() {
    if (!agent) return;
    const base = agent.uptime;
    uptime.textContent =
      base === null || base === undefined || agent.status === 'offline'
        ? '–'
        : duration(base + (Date.now() - fetchedAt) / 1000);
  }

  function draw() {
    const m = agent.metrics ?? {};
    const c = agent.capabilities ?? {};
    replace(
      list,
      row('Status', badge(agent.status)),
      row('Health', badge(agent.health, 'health')),
      row('Uptime', uptime),
      row('Last activity', h('span', { text: relative(agent.lastActivity), title: time(agent.lastActivity) })),
      agent.statusMessage ? row('Message', h('span', { text: agent.statusMessage })) : null,
    );
    replace(
      metrics,
      row('Messages in / out', `${m.messagesIn ?? 0} / ${m.messagesOut ?? 0}`),
      row('Commands handled / failed', `${m.commandsHandled ?? 0} / ${m.commandsFailed ?? 0}`),
      row('Tasks handled / failed', `${m.tasksHandled ?? 0} / ${m.tasksFailed ?? 0}`),
      row('Handling time mean / p95', `${seconds(m.handlingTimeMean)} / ${seconds(m.handlingTimeP95)}`),
      row('Reconnects', String(m.reconnects ?? 0)),
    );
    replace(
      capabilities,
      row('Commands', (c.commands ?? []).join(', ') || 'none'),
      row('Task types', (c.taskTypes ?? []).join(', ') || 'none'),
      row('Prompt streams', c.streaming ? 'yes' : 'no'),
      row('Files', c.files ? 'yes' : 'no'),
      row('Concurrency', String(c.maxConcurrency ?? 1)),
      row('Software', [c.sdk, c.version].filter(Boolean).join(', ') || '–'),
    );
    tick();
  }

  const ticker = setInterval(tick, 1000);
  return {
    el,
    update(next) {
      agent = { ...next };
      fetchedAt = Date.now();
      draw();
    },
    status(event) {
      if (!agent) return;
      agent.status = event.status;
      agent.health = event.health;
      agent.statusMessage = event.statusMessage ?? null;
      draw();
    },
    destroy() {
      clearInterval(ticker);
    },
  };
}
