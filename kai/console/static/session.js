// The signed-in session: tokens kept in localStorage (so a reload keeps it), the access token
// refreshed before it expires, and one refresh at a time across tabs (a refresh token works
// once; presenting a spent one ends the session). Tokens only ever travel in headers and
// bodies, never in a URL.

import { ApiError, failure } from './errors.js';

const KEY = 'kai.session';
const MAX_MARGIN = 60_000; // refresh a minute before expiry, or sooner for short-lived tokens
const MAX_TIMER = 2 ** 31 - 1;

let tokens = read();
let info = null; // {user, permissions, session} from GET /api/auth/session
let refreshing = null;
let timer = null;
const listeners = new Set();

function read() {
  try {
    const raw = localStorage.getItem(KEY);
    return raw ? JSON.parse(raw) : null;
  } catch {
    return null;
  }
}

function write(next) {
  tokens = next;
  if (next) localStorage.setItem(KEY, JSON.stringify(next));
  else localStorage.removeItem(KEY);
  schedule();
}

function fromAnswer(answer) {
  return {
    accessToken: answer.tokens.accessToken.token,
    accessExpiresAt: answer.tokens.accessToken.expiresAt,
    refreshToken: answer.tokens.refreshToken.token,
    refreshExpiresAt: answer.tokens.refreshToken.expiresAt,
    issuedAt: new Date().toISOString(),
  };
}

function margin(t) {
  const life = Date.parse(t.accessExpiresAt) - Date.parse(t.issuedAt);
  return Math.min(MAX_MARGIN, Math.max(1000, life / 4));
}

function needsRefresh(t) {
  return Date.parse(t.accessExpiresAt) - Date.now() < margin(t);
}

function schedule() {
  clearTimeout(timer);
  timer = null;
  if (!tokens) return;
  const due = Date.parse(tokens.accessExpiresAt) - margin(tokens) - Date.now();
  timer = setTimeout(() => refresh().catch(() => {}), Math.min(MAX_TIMER, Math.max(1000, due)));
}

function notify(change) {
  for (const listener of listeners) listener(change);
}

/** Call `listener({signedIn, reason})` when the session starts or ends. */
export function onChange(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function signedIn() {
  return tokens !== null && info !== null;
}

export function user() {
  return info?.user ?? null;
}

/** Whether the signed-in user's role holds `permission` (what the console shows; the hub decides). */
export function can(permission) {
  return Boolean(info?.permissions?.includes(permission));
}

async function post(path, body, token = null) {
  const headers = { 'Content-Type': 'application/json', Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, {
    method: 'POST',
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'omit',
    cache: 'no-store',
  });
  if (!response.ok) throw await failure(response);
  return response.json();
}

function end(reason) {
  const was = tokens !== null;
  write(null);
  info = null;
  if (was) notify({ signedIn: false, reason });
}

/** Forget a session the hub has ended (a socket closed with 4001, say). */
export function expire(reason) {
  end(reason);
}

/** A valid access token, refreshed first when it is about to expire. */
export async function accessToken() {
  if (!tokens) throw new ApiError(401, 'You are not signed in.');
  if (needsRefresh(tokens)) await refresh();
  return tokens.accessToken;
}

/** Trade the refresh token for new tokens; one refresh at a time, in this tab and across tabs. */
export function refresh() {
  if (!refreshing) {
    const run = () => doRefresh();
    const locked = navigator.locks ? navigator.locks.request('kai-session-refresh', run) : run();
    refreshing = locked.finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

async function doRefresh() {
  const stored = read();
  if (!stored) {
    end('You were signed out.');
    throw new ApiError(401, 'You were signed out.');
  }
  if (tokens && stored.refreshToken !== tokens.refreshToken && !needsRefresh(stored)) {
    tokens = stored; // another tab refreshed while this one waited for the lock
    schedule();
    return;
  }
  try {
    write(fromAnswer(await post('/api/auth/refresh', { refreshToken: stored.refreshToken })));
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      end('Your session has ended. Please sign in again.');
    }
    throw error;
  }
}

/** `fetch` with the access token; a 401 is answered by one refresh and one retry. */
export async function authorizedFetch(url, init = {}) {
  const send = async () =>
    fetch(url, {
      ...init,
      headers: { ...(init.headers ?? {}), Authorization: `Bearer ${await accessToken()}` },
      credentials: 'omit',
      cache: 'no-store',
    });
  let response = await send();
  if (response.status === 401 && tokens) {
    await refresh();
    response = await send();
    if (response.status === 401) end('Your session has ended. Please sign in again.');
  }
  return response;
}

async function loadInfo() {
  const response = await authorizedFetch('/api/auth/session', {
    headers: { Accept: 'application/json' },
  });
  if (!response.ok) throw await failure(response);
  info = await response.json();
}

async function begin(answer) {
  write(fromAnswer(answer));
  await loadInfo();
  notify({ signedIn: true });
}

export async function signIn(email, password) {
  await begin(await post('/api/auth/login', { credentials: { email, password } }));
}

export async function requestMagicLink(email) {
  return post('/api/auth/magic-link', { email });
}

export async function verifyMagicLink(token) {
  await begin(await post('/api/auth/verify-magic', { token }));
}

/** Pick up the session this browser kept; false when there is none (or it has ended). */
export async function restore() {
  if (!tokens) return false;
  try {
    await loadInfo();
    return true;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      end('Your session has ended. Please sign in again.');
      return false;
    }
    throw error;
  }
}

/** End the session at the hub (its tokens and sockets die at once), then here. */
export async function signOut() {
  const current = tokens;
  if (current) {
    try {
      await post('/api/auth/logout', undefined, current.accessToken);
    } catch {
      // The session may be over already; it ends here either way.
    }
  }
  end('You are signed out.');
}

window.addEventListener('storage', (event) => {
  if (event.key !== KEY && event.key !== null) return;
  const next = read();
  if (!next) {
    if (tokens) {
      tokens = null;
      info = null;
      schedule();
      notify({ signedIn: false, reason: 'You were signed out in another tab.' });
    }
  } else {
    tokens = next;
    schedule();
  }
});

document.addEventListener('visibilitychange', () => {
  // Timers sleep in background tabs: catch up when the console is looked at again.
  if (document.visibilityState === 'visible' && tokens && needsRefresh(tokens)) {
    refresh().catch(() => {});
  }
});
