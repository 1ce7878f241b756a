// Building the page from data, safely: every string becomes a text node or an attribute value,
// never markup. Nothing in the console parses HTML, so agent output can never run as code.

const PROPERTIES = new Set(['value', 'checked', 'disabled', 'selected', 'hidden', 'open', 'max', 'min']);

/** An element with attributes, properties, listeners (`onclick`) and children (text or nodes). */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (/HTML$/i.test(key) || key === 'style') {
      throw new Error(`h(): ${key} is not allowed: text and classes only`);
    }
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = String(value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (PROPERTIES.has(key)) el[key] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

/** Append children: nodes as they are, strings and numbers as text, arrays flattened. */
export function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** Replace everything inside `el` with `children`. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

let ids = 0;
/** A unique id for tying a label to its control. */
export function uid(prefix = 'k') {
  ids += 1;
  return `${prefix}-${ids}`;
}

// -- formatting -------------------------------------------------------------------------------

export function time(iso) {
  if (!iso) return '–';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

export function clock(iso) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso ?? '');
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return '–';
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400);
  const hrs = Math.floor((s % 86400) / 3600);
  const min = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  if (d) return `${d}d ${hrs}h ${min}m`;
  if (hrs) return `${hrs}h ${min}m ${sec}s`;
  if (min) return `${min}m ${sec}s`;
  return `${sec}s`;
}

/** "in 4s", "12s ago", "now": a time relative to this moment. */
export function relative(iso) {
  if (!iso) return '–';
  const delta = (new Date(iso).getTime() - Date.now()) / 1000;
  if (Number.isNaN(delta)) return '–';
  if (Math.abs(delta) < 1) return 'now';
  return delta > 0 ? `in ${duration(delta)}` : `${duration(-delta)} ago`;
}

export function bytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

export function seconds(value) {
  if (value === null || value === undefined) return '–';
  return value < 1 ? `${(value * 1000).toFixed(1)} ms` : `${value.toFixed(2)} s`;
}

export function percent(fraction) {
  return `${Math.round(Math.max(0, Math.min(1, fraction ?? 0)) * 100)}%`;
}

export function json(value) {
  return JSON.stringify(value, null, 2);
}

export function shortId(id) {
  return String(id ?? '').slice(0, 8);
}
