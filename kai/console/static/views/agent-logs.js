// The agent's log: live lines at the bottom, a level filter, older lines paged in when the
// top of the list scrolls into view. Every line is shown as text, whatever it contains.

import { get, path } from '../api.js';
import { clock, h, replace } from '../dom.js';
import { Gate } from '../socket.js';
import { errorBox, field, select } from '../ui.js';

const PAGE = 100;
const RANK = { DEBUG: 10, INFO: 20, WARNING: 30, ERROR: 40, CRITICAL: 50 };
const FILTERS = [
  ['', 'All levels'],
  ['INFO', 'Info and above'],
  ['WARNING', 'Warnings and above'],
  ['ERROR', 'Errors and above'],
];

/** The same line read over REST and over the socket gets the same key. */
function key(entry) {
  const match = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?/.exec(entry.timestamp ?? '');
  const stamp = match ? `${match[1]}.${(match[2] ?? '').padEnd(6, '0').slice(0, 6)}` : entry.timestamp;
  return `${stamp}|${entry.level}|${entry.message}`;
}

function line(entry) {
  const level = String(entry.level ?? 'INFO').toUpperCase();
  return h(
    'li',
    { class: `log-row level-${level.toLowerCase()}` },
    h('time', { datetime: entry.timestamp, text: clock(entry.timestamp) }),
    h('span', { class: 'log-level', text: level }),
    entry.logger ? h('span', { class: 'log-logger', text: entry.logger }) : null,
    h('span', { class: 'log-message', text: entry.message }),
  );
}

export function logsPanel({ agentId }) {
  const error = errorBox();
  const level = select('level', FILTERS, '');
  const olderButton = h('button', { type: 'button', class: 'link', text: 'Load older lines' });
  const olderStatus = h('span', { class: 'muted' });
  const older = h('li', { class: 'log-older' }, olderButton, olderStatus);
  const list = h('ol', { class: 'log-list', role: 'log', 'aria-label': 'Log lines' });
  const empty = h('p', { class: 'empty', text: 'No log lines yet.', hidden: true });
  const scroller = h('div', { class: 'log-scroll', tabindex: 0, role: 'group', 'aria-label': 'Agent log, scrollable' }, list, empty);
  const el = h(
    'section',
    { class: 'card logs', 'aria-labelledby': 'logs-title' },
    h('div', { class: 'card-head' }, h('h2', { id: 'logs-title', text: 'Logs' }), field('Level', level)),
    error.el,
    scroller,
  );

  let anchor = null; // the newest line of the first page: older pages are counted below it
  let offset = 0;
  let hasMore = false;
  let loadingOlder = false;
  let generation = 0;
  const seen = new Set();

  const minimum = () => RANK[level.value] ?? 0;
  const atBottom = () => scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;

  function showOlder() {
    older.hidden = !hasMore;
    empty.hidden = list.querySelector('.log-row') !== null;
  }

  function live(entry) {
    if ((RANK[String(entry.level).toUpperCase()] ?? 0) < minimum()) return;
    const k = key(entry);
    if (seen.has(k)) return;
    seen.add(k);
    const stick = atBottom();
    list.append(line(entry));
    showOlder();
    if (stick) scroller.scrollTop = scroller.scrollHeight;
  }
  const gate = new Gate(live);

  async function reload() {
    gate.close();
    const mine = ++generation;
    error.clear();
    try {
      const page = await get(path`/api/agents/${agentId}/logs`, { level: level.value, limit: PAGE });
      if (mine !== generation) return;
      seen.clear();
      replace(list, older);
      for (const entry of [...page.logs].reverse()) {
        seen.add(key(entry));
        list.append(line(entry));
      }
      anchor = page.logs[0]?.timestamp ?? null;
      offset = page.logs.length;
      hasMore = page.hasMore;
      showOlder();
      scroller.scrollTop = scroller.scrollHeight;
    } catch (failure) {
      if (mine === generation) error.show(failure);
    } finally {
      if (mine === generation) gate.open();
    }
  }

  async function loadOlder() {
    if (!hasMore || loadingOlder) return;
    loadingOlder = true;
    const mine = generation;
    olderStatus.textContent = 'Loading…';
    try {
      const page = await get(path`/api/agents/${agentId}/logs`, {
        level: level.value,
        limit: PAGE,
        offset,
        endTime: anchor,
      });
      if (mine !== generation) return;
      offset += page.logs.length;
      hasMore = page.hasMore && page.logs.length > 0;
      const before = scroller.scrollHeight;
      const rows = [];
      for (const entry of [...page.logs].reverse()) {
        const k = key(entry);
        if (seen.has(k)) continue;
        seen.add(k);
        rows.push(line(entry));
      }
      older.after(...rows);
      scroller.scrollTop += scroller.scrollHeight - before; // keep the lines in view where they were
      showOlder();
    } catch (failure) {
      error.show(failure);
    } finally {
      loadingOlder = false;
      olderStatus.textContent = '';
    }
  }

  olderButton.addEventListener('click', loadOlder);
  level.addEventListener('change', reload);
  const observer = new IntersectionObserver(
    (entries) => {
      if (entries.some((e) => e.isIntersecting) && gate.held === null) loadOlder();
    },
    { root: scroller },
  );
  observer.observe(older);
  replace(list, older);
  showOlder();

  return {
    el,
    reload,
    entry: (event) => gate.push(event.entry),
    destroy: () => observer.disconnect(),
  };
}
