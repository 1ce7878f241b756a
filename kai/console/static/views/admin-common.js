// Paging shared by the admin lists: "Newer" / "Older" over offset and limit.

import { h } from '../dom.js';

export function pager(onChange) {
  const previous = h('button', { type: 'button', class: 'secondary', text: 'Previous page' });
  const next = h('button', { type: 'button', class: 'secondary', text: 'Next page' });
  const where = h('span', { class: 'muted', 'aria-live': 'polite' });
  const el = h('div', { class: 'pager' }, previous, where, next);
  const state = {
    el,
    offset: 0,
    limit: 50,
    reset() {
      state.offset = 0;
    },
    update(page, limit) {
      state.limit = limit;
      const shown = Object.values(page).find(Array.isArray)?.length ?? 0;
      where.textContent = page.total
        ? `${state.offset + 1}–${state.offset + shown} of ${page.total}`
        : '';
      previous.disabled = state.offset === 0;
      next.disabled = !page.hasMore;
      el.hidden = !page.total || (state.offset === 0 && !page.hasMore);
    },
  };
  previous.addEventListener('click', () => {
    state.offset = Math.max(0, state.offset - state.limit);
    onChange();
  });
  next.addEventListener('click', () => {
    state.offset += state.limit;
    onChange();
  });
  return state;
}

/** An ISO time (UTC) from a datetime-local input, or undefined when it is empty. */
export function isoFromLocal(input) {
  if (!input.value) return undefined;
  const date = new Date(input.value);
  return Number.isNaN(date.getTime()) ? undefined : date.toISOString();
}
