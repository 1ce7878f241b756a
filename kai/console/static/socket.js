// One agent, watched live over /ws/agents/{id} (docs/websocket.md): authenticates with its
// first message, remembers the seq and epoch of the last event, and after a drop reconnects
// with backoff and resumes from there, so nothing is missed and nothing comes twice.

import { accessToken, refresh } from './session.js';

const HEARTBEAT_EVERY = 25_000;
const HEARTBEAT_PATIENCE = 10_000;
const GIVE_UP = new Map([
  [4003, 'Your access to this agent was revoked.'],
  [4004, 'This agent was deleted.'],
]);

/**
 * States, passed to `onState(state, detail)`: `connecting`, `live`, `reconnecting` (detail says
 * when the next try is), `closed` (detail says why; it does not try again) and `ended` (the
 * session is over).
 */
export class AgentSocket {
  constructor(agentId, { onState = () => {}, onSessionEnded = () => {}, path = null, giveUp = GIVE_UP } = {}) {
    this.agentId = agentId;
    // Another socket with the same rules (a team channel: /ws/teams/{id}) can be watched too.
    this.path = path ?? `/ws/agents/${encodeURIComponent(agentId)}`;
    this.giveUp = giveUp;
    this.onState = onState;
    this.onSessionEnded = onSessionEnded;
    this.seq = null;
    this.epoch = null;
    this.attempt = 0;
    this.ws = null;
    this.stopped = false;
    this.listeners = new Map();
    this.timers = new Set();
    this.pending = null; // the timer of the next reconnection attempt
    this.lastHeard = 0;
    this.state = 'idle';
    this.onOnline = () => this.retryNow();
  }

  /** Call `listener(message)` for messages of `type` (`*` for every one). */
  on(type, listener) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(listener);
    return () => this.listeners.get(type)?.delete(listener);
  }

  start() {
    window.addEventListener('online', this.onOnline);
    this.connect();
    return this;
  }

  stop() {
    this.stopped = true;
    window.removeEventListener('online', this.onOnline);
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    if (this.ws) this.ws.close(1000, 'Leaving');
    this.ws = null;
  }

  send(message) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  later(delay, fn) {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      fn();
    }, delay);
    this.timers.add(timer);
    return timer;
  }

  setState(state, detail = '') {
    this.state = state;
    this.onState(state, detail);
  }

  url() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const params = new URLSearchParams();
    if (this.seq !== null) {
      params.set('since', String(this.seq));
      params.set('epoch', this.epoch);
    }
    const query = params.toString();
    return `${scheme}//${location.host}${this.path}${query ? `?${query}` : ''}`;
  }

  async connect() {
    if (this.stopped) return;
    if (this.seq === null && this.attempt === 0) this.setState('connecting');
    else this.setState('reconnecting', 'trying now');
    let token;
    try {
      token = await accessToken();
    } catch {
      if (!this.stopped) this.retry();
      return;
    }
    if (this.stopped) return;
    const ws = new WebSocket(this.url());
    this.ws = ws;
    let heard = false;
    ws.addEventListener('open', () => ws.send(JSON.stringify({ type: 'auth', token })));
    ws.addEventListener('message', (event) => {
      if (ws !== this.ws) return;
      this.lastHeard = Date.now();
      if (!heard) {
        heard = true;
        this.attempt = 0; // a connection that delivered something resets the backoff
        this.setState('live');
        this.heartbeat(ws);
      }
      this.receive(event.data);
    });
    ws.addEventListener('close', (event) => {
      if (ws !== this.ws) return;
      this.ws = null;
      this.closed(event.code, event.reason);
    });
  }

  heartbeat(ws) {
    this.later(HEARTBEAT_EVERY, () => {
      if (ws !== this.ws || this.stopped) return;
      const asked = Date.now();
      this.send({ type: 'heartbeat' });
      this.later(HEARTBEAT_PATIENCE, () => {
        if (ws === this.ws && this.lastHeard < asked) ws.close(4000, 'No heartbeat answer');
      });
      this.heartbeat(ws);
    });
  }

  receive(raw) {
    let message;
    try {
      message = JSON.parse(raw);
    } catch {
      return;
    }
    if (!message || typeof message.type !== 'string') return;
    if (message.type === 'resync_required') {
      this.seq = message.seq;
      this.epoch = message.epoch;
      this.emit(message);
      if (message.status) this.emit({ ...message.status, type: 'status_update', snapshot: true });
      return;
    }
    if (typeof message.seq === 'number' && typeof message.epoch === 'string') {
      const duplicate =
        !message.snapshot && message.epoch === this.epoch && this.seq !== null && message.seq <= this.seq;
      if (duplicate) return;
      this.seq = message.seq;
      this.epoch = message.epoch;
    }
    this.emit(message);
  }

  emit(message) {
    for (const key of [message.type, '*']) {
      for (const listener of this.listeners.get(key) ?? []) {
        try {
          listener(message);
        } catch (error) {
          console.error('listener failed', error);
        }
      }
    }
  }

  async closed(code, reason) {
    if (this.stopped) return;
    if (code === 4001) {
      this.setState('ended', 'Your session has ended.');
      this.onSessionEnded();
      return;
    }
    if (this.giveUp.has(code)) {
      this.setState('closed', this.giveUp.get(code));
      return;
    }
    if (code === 1008) {
      if (reason === 'Authentication failed') {
        try {
          await refresh();
        } catch {
          this.setState('ended', 'Your session has ended.');
          this.onSessionEnded();
          return;
        }
        this.retry();
        return;
      }
      this.setState('closed', reason || 'The hub refused this connection.');
      return;
    }
    if (code === 4008) {
      this.later(0, () => this.connect()); // too slow to keep up: resume at once
      return;
    }
    this.retry();
  }

  retry() {
    const ceiling = Math.min(30_000, 500 * 2 ** this.attempt);
    const delay = Math.random() * ceiling;
    this.attempt += 1;
    this.setState('reconnecting', `next try in ${Math.max(1, Math.round(delay / 1000))}s`);
    this.pending = this.later(delay, () => {
      this.pending = null;
      this.connect();
    });
  }

  retryNow() {
    if (this.pending) {
      clearTimeout(this.pending);
      this.timers.delete(this.pending);
      this.pending = null;
      this.connect();
    }
  }
}

/**
 * Holds events back while a panel (re)loads its state over REST, then hands them over in
 * order, so that an event is never overwritten by an older snapshot.
 */
export class Gate {
  constructor(apply) {
    this.apply = apply;
    this.held = null;
  }

  close() {
    this.held = this.held ?? [];
  }

  open() {
    const held = this.held ?? [];
    this.held = null;
    for (const event of held) this.apply(event);
  }

  push(event) {
    if (this.held) this.held.push(event);
    else this.apply(event);
  }
}
