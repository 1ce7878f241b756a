// The agent's tasks: create one with a priority, and watch each one's progress, place in the
// queue and estimated times live; cancel one that has not ended.

import { get, path, post } from '../api.js';
import { h, json, relative, replace, shortId, time } from '../dom.js';
import { Gate } from '../socket.js';
import { badge, busy, errorBox, field, notify, parseObject, progress, select } from '../ui.js';

const PAGE = 50;
const ACTIVE = new Set(['queued', 'running']);
const PRIORITIES = [
  ['low', 'Low'],
  ['medium', 'Medium'],
  ['high', 'High'],
  ['critical', 'Critical'],
];

function when(task) {
  if (task.status === 'queued') {
    const place = task.queuePosition ? `#${task.queuePosition} in the queue` : 'queued';
    return task.estimatedStartTime ? `${place}, starts ${relative(task.estimatedStartTime)}` : place;
  }
  if (task.status === 'running') {
    return task.estimatedCompletion ? `running, done ${relative(task.estimatedCompletion)}` : 'running';
  }
  return task.completedAt ? `ended ${relative(task.completedAt)}` : task.status;
}

export function tasksPanel({ agentId, allowed }) {
  const error = errorBox();
  const typeSlot = h('div');
  const params = h('textarea', { name: 'parameters', rows: 2, spellcheck: false, placeholder: '{"steps": 5}' });
  const priority = select('priority', PRIORITIES, 'medium');
  const form = h(
    'form',
    { class: 'stack' },
    error.el,
    typeSlot,
    field('Parameters (JSON object)', params),
    field('Priority', priority),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary', text: 'Create task' })),
  );
  const list = h('ul', { class: 'task-list', 'aria-label': 'Tasks, newest first' });
  const empty = h('p', { class: 'empty', text: 'No tasks yet.' });
  const el = h(
    'section',
    { class: 'card', 'aria-labelledby': 'tasks-title' },
    h('h2', { id: 'tasks-title', text: 'Tasks' }),
    allowed ? form : h('p', { class: 'muted', text: 'Your role may not create tasks.' }),
    empty,
    list,
  );
  const rows = new Map();
  let taskType = null;
  let refreshTimer = null;
  let generation = 0;

  function draw(row) {
    const task = row.task;
    row.el.dataset.status = task.status;
    replace(row.badge, badge(task.status, 'task'));
    row.priority.textContent = `${task.priority ?? 'medium'} priority`;
    row.created.textContent = time(task.createdAt);
    row.bar.set(task.progress);
    row.meta.textContent = [task.message, when(task), task.attempts > 1 ? `attempt ${task.attempts}` : null]
      .filter(Boolean)
      .join(' · ');
    row.cancel.hidden = !allowed || !ACTIVE.has(task.status);
    const outcome = `${task.status}|${task.result != null}|${task.error ?? ''}`;
    if (row.outcomeOf === outcome) return; // an open "Result" stays open
    row.outcomeOf = outcome;
    if (task.status === 'succeeded' && task.result !== undefined && task.result !== null) {
      replace(row.outcome, h('details', {}, h('summary', { text: 'Result' }), h('pre', { class: 'output', text: json(task.result) })));
    } else if (task.status === 'failed') {
      replace(row.outcome, h('p', { class: 'bad', text: task.error ?? 'Failed' }));
    } else {
      replace(row.outcome);
    }
  }

  function add(task, { first = true } = {}) {
    const bar = progress(`Progress of ${task.taskType} task ${shortId(task.taskId)}`);
    const cancel = h('button', { type: 'button', class: 'secondary small', text: 'Cancel', 'aria-label': `Cancel task ${shortId(task.taskId)}` });
    const row = {
      task: { ...task },
      version: 0,
      badge: h('span'),
      priority: h('span', { class: 'muted' }),
      created: h('span', { class: 'muted' }),
      bar,
      meta: h('p', { class: 'task-meta' }),
      outcome: h('div'),
      cancel,
    };
    row.el = h(
      'li',
      { class: 'task', dataset: { taskId: task.taskId } },
      h(
        'div',
        { class: 'task-head' },
        h('strong', { text: task.taskType }),
        h('code', { text: shortId(task.taskId), title: task.taskId }),
        row.badge,
        row.priority,
        row.created,
        cancel,
      ),
      bar.el,
      row.meta,
      row.outcome,
    );
    cancel.addEventListener('click', async () => {
      cancel.disabled = true;
      try {
        await post(path`/api/tasks/${task.taskId}/cancel`);
      } catch (failure) {
        error.show(failure);
      } finally {
        cancel.disabled = false;
      }
    });
    rows.set(task.taskId, row);
    if (first) list.prepend(row.el);
    else list.append(row.el);
    empty.hidden = true;
    draw(row);
    return row;
  }

  async function reload() {
    gate.close();
    const mine = ++generation;
    try {
      const page = await get(path`/api/agents/${agentId}/tasks`, { limit: PAGE });
      if (mine !== generation) return;
      rows.clear();
      replace(list);
      for (const task of page.tasks) add(task, { first: false });
      empty.hidden = page.tasks.length > 0;
    } catch (failure) {
      if (mine === generation) error.show(failure);
    } finally {
      if (mine === generation) gate.open();
      scheduleRefresh();
    }
  }

  // Queue positions and estimates move as other tasks do: read them again after changes.
  async function refreshQueue() {
    refreshTimer = null;
    const versions = new Map([...rows].map(([id, row]) => [id, row.version]));
    try {
      const page = await get(path`/api/agents/${agentId}/tasks`, { limit: PAGE });
      for (const task of page.tasks) {
        const row = rows.get(task.taskId);
        if (!row) {
          add(task);
          continue;
        }
        const unchanged = versions.get(task.taskId) === row.version;
        const { queuePosition, estimatedStartTime, estimatedCompletion, priority, createdAt, attempts, completedAt } = task;
        Object.assign(row.task, unchanged ? task : { queuePosition, estimatedStartTime, estimatedCompletion, priority, createdAt, attempts, completedAt });
        draw(row);
      }
    } catch {
      // The next change tries again.
    }
  }

  function scheduleRefresh() {
    if (refreshTimer === null) refreshTimer = setTimeout(refreshQueue, 400);
  }

  function update(event) {
    const row = rows.get(event.taskId);
    const fields = {
      status: event.status,
      progress: event.progress,
      message: event.message ?? null,
      result: event.result ?? null,
      error: event.error ?? null,
      attempts: event.attempt ?? row?.task.attempts,
    };
    if (row) {
      row.version += 1;
      Object.assign(row.task, fields);
      if (!ACTIVE.has(event.status)) row.task.queuePosition = null;
      draw(row);
    } else {
      add({ taskId: event.taskId, taskType: event.taskType, createdAt: event.timestamp, ...fields });
    }
    scheduleRefresh();
  }
  const gate = new Gate(update);

  let shownTypes = null;

  function setAgent(agent) {
    if (!allowed) return;
    const types = agent.capabilities?.taskTypes ?? [];
    const key = JSON.stringify(types);
    if (key === shownTypes) return; // the select may be in use
    shownTypes = key;
    const previous = taskType?.value;
    taskType = types.length
      ? select('taskType', types.map((t) => [t, t]), types.includes(previous) ? previous : types[0])
      : h('input', { name: 'taskType', required: true, value: previous ?? '', maxlength: 200 });
    replace(typeSlot, field('Task type', taskType));
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
    await busy(form, async () => {
      try {
        const created = await post(path`/api/agents/${agentId}/task`, {
          taskType: taskType.value.trim(),
          parameters,
          priority: priority.value,
        });
        notify(`Task ${shortId(created.taskId)} created.`);
        scheduleRefresh();
      } catch (failure) {
        error.show(failure);
      }
    });
  });

  const ticker = setInterval(() => {
    for (const row of rows.values()) if (ACTIVE.has(row.task.status)) draw(row);
  }, 1000);

  return {
    el,
    setAgent,
    reload,
    task: (event) => gate.push(event),
    destroy() {
      clearInterval(ticker);
      clearTimeout(refreshTimer);
    },
  };
}
