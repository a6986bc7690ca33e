/**
 * pgcast browser client: one dependency-free ES module. This file is the npm package
 * `pgcast-client` (clients/js/src/client.js) and, copied verbatim by `make client-js`, the
 * gateway's /client.js (gateway/static/client.js; a test fails when the two differ).
 *
 * It hides reconnects and resume: subscriptions survive reconnects, each channel resumes
 * from its last offset and epoch, the app hears `onRecoveryFailed` when history could not
 * cover a gap (refetch then), a token callback is called again on every reconnect and
 * before expiry (sent as a `refresh` frame), and SSE takes over where WebSocket is blocked.
 * Presence and client messages ride the WebSocket: `track()` is remembered and sent again on
 * every new connection, a subscription with `presence` keeps its member set (a snapshot
 * replaces it; join/leave frames update it), `publish()` sends an ephemeral message that
 * other subscribers get as `onBroadcast`. Close code 4003 (the application disconnected
 * this user) and a revoked subscription end things for good: no automatic retry.
 * Protocol: see the README's "protocol" section (frames, close codes 4001/4003/4008/1009/1012).
 */

const DEFAULTS = Object.freeze({
  transport: 'auto', // 'auto' | 'websocket' | 'sse'
  backoffBase: 500, // ms: full-jitter exponential backoff between failed attempts
  backoffCap: 20000,
  healthyAfter: 10000, // ms a connection must live before the backoff resets
  restartJitter: 1000, // ms: spread of the prompt reconnect after 1012 (gateway draining)
  connectTimeout: 10000,
  pingInterval: 25000, // ms between client pings; no frame for interval+pongTimeout = dead
  pongTimeout: 10000,
  refreshMargin: 30000, // ms before `exp` at which a token callback is asked again
  wsFailuresBeforeSse: 2, // WebSocket attempts that never opened before SSE is tried
  requestTimeout: 10000, // ms a presence()/publish()/untrack() waits for its answer (queued included)
});

/** Close codes of the contract, with what this client does about each. */
export const CLOSE_CODES = Object.freeze({
  1009: { name: 'message_too_big', advice: 'reconnect with backoff' },
  1012: { name: 'service_restart', advice: 'reconnect promptly with jitter, resume' },
  4001: { name: 'unauthorized', advice: 'fetch a new token, reconnect, resume' },
  4003: { name: 'disconnected', advice: 'the application disconnected this user: stop, tell the app' },
  4008: { name: 'slow_consumer', advice: 'reconnect, resume' },
});

/** Full-jitter backoff: uniform in [0, min(cap, base * 2^attempt)] (ms). */
export function backoffDelay(attempt, base, cap, random = Math.random) {
  return random() * Math.min(cap, base * 2 ** Math.min(attempt, 30));
}

/** The `exp` of a JWT in ms since the epoch, or null (the client never verifies tokens). */
export function tokenExpiry(token) {
  try {
    const part = String(token).split('.')[1];
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)));
    return typeof claims.exp === 'number' ? claims.exp * 1000 : null;
  } catch {
    return null;
  }
}

/** When (ms from now) to ask for a fresh token: a margin before expiry, at most 20% of it. */
export function refreshDelay(token, now, margin) {
  const exp = tokenExpiry(token);
  if (exp === null) return null;
  const left = exp - now;
  return Math.max(0, left - Math.min(margin, left * 0.2));
}

const DECIMAL = /^[0-9]+$/;

/** Compare offsets: decimal strings numerically, anything else only for equality (NaN). */
export function compareOffsets(a, b) {
  if (a === b) return 0;
  if (DECIMAL.test(a) && DECIMAL.test(b)) {
    if (a.length !== b.length) return a.length < b.length ? -1 : 1;
    return a < b ? -1 : 1;
  }
  return NaN;
}

/**
 * A channel's position: where to resume (`epoch`, `offset`) and the last delivered offset,
 * so that a message is delivered at most once even if a gateway repeats it.
 */
export class Position {
  constructor(epoch = null, offset = null) {
    this.epoch = epoch;
    this.offset = offset;
    this.delivered = null;
  }

  /** The resume fields of a subscribe request, if there is anything to resume from. */
  resumeFields() {
    return this.epoch !== null && this.offset !== null
      ? { since: this.offset, epoch: this.epoch }
      : {};
  }

  /** Apply a `subscribed` frame; returns true when continuity was lost (refetch state). */
  subscribed(frame, resumed, active) {
    if (frame.recovered && resumed && frame.epoch === this.epoch) return false;
    const lost = resumed || active || (this.epoch !== null && frame.epoch !== this.epoch);
    this.epoch = frame.epoch;
    this.offset = frame.offset;
    this.delivered = null;
    return lost;
  }

  /** Whether to deliver a `message` frame (false: already delivered); advances the position. */
  accept(offset) {
    if (this.delivered !== null && !(compareOffsets(offset, this.delivered) > 0)) return false;
    this.delivered = offset;
    if (this.offset === null || compareOffsets(offset, this.offset) > 0) this.offset = offset;
    return true;
  }
}

/** What to do after a connection ended: reconnect after `delay` ms, or stop. */
export function reconnectPlan(outcome, { attempt, canRefetchToken, options, random }) {
  const { code } = outcome;
  if (outcome.planned) return { stop: false, delay: 0 }; // SSE reopened on purpose
  if (code === 4001 && !canRefetchToken) {
    return { stop: true, delay: 0, reason: 'token rejected and no token callback to get another' };
  }
  // The application ended this user's connections (pgcast.disconnect): its reason, no retry.
  if (code === 4003) return { stop: true, delay: 0, reason: outcome.reason ?? '' };
  if (code === 1012) return { stop: false, delay: random() * options.restartJitter };
  if ((code === 4008 || code === 4001) && attempt === 0) {
    return { stop: false, delay: random() * options.backoffBase };
  }
  return { stop: false, delay: backoffDelay(attempt, options.backoffBase, options.backoffCap, random) };
}

/** `https://h/base` or `wss://h/base` → { ws: 'wss://h/base/ws', sse: 'https://h/base/sse' }. */
export function endpoints(base) {
  const url = new URL(String(base));
  const path = url.pathname.replace(/\/(ws|sse|client\.js)?$/, '');
  const secure = url.protocol === 'https:' || url.protocol === 'wss:';
  return {
    ws: `${secure ? 'wss' : 'ws'}://${url.host}${path}/ws`,
    sse: `${secure ? 'https' : 'http'}://${url.host}${path}/sse`,
  };
}

function defaultBase() {
  // Loaded from the gateway (`import ... from 'https://rt.example.com/client.js'`): talk to it.
  // Bundled from npm, the module's own URL says nothing about the gateway: `url` is needed.
  // (Not `new URL('.', import.meta.url)`: bundlers take that form for an asset to resolve.)
  const here = String(import.meta.url).split(/[?#]/)[0];
  if (!/^https?:/.test(here)) {
    throw new Error('pgcast: pass the gateway as `url` (client.js was not loaded from a gateway)');
  }
  return here.slice(0, here.lastIndexOf('/') + 1);
}

/** A presence member's identity: one entry per connection (a user with two tabs is two). */
function memberKey(member) {
  return String(member?.conn);
}

function sameMember(a, b) {
  return a.sub === b.sub && JSON.stringify(a.meta ?? {}) === JSON.stringify(b.meta ?? {});
}

/**
 * One channel subscription; survives reconnects until `unsubscribe()`, or until the server
 * revokes it (`{type:'unsubscribed', reason:'revoked'}`: ended for good, `onUnsubscribed`).
 */
export class Subscription {
  constructor(client, channel, handlers, position) {
    this.client = client;
    this.channel = channel;
    this.handlers = handlers;
    this.pos = position;
    this.state = 'pending'; // pending | subscribing | active | failed | closed | revoked
    this.presence = Boolean(handlers.presence ?? (handlers.onPresence || handlers.onJoin || handlers.onLeave));
    this._members = new Map(); // conn -> {sub, conn, meta}
    this._resumed = false;
  }

  /** `{ epoch, offset }`: persist it to resume after a page reload (`subscribe(c, h, pos)`). */
  get position() {
    return { epoch: this.pos.epoch, offset: this.pos.offset };
  }

  /** The channel's presence members (subscriptions with `presence`), one per connection. */
  get members() {
    return [...this._members.values()];
  }

  unsubscribe() {
    this.client._unsubscribe(this);
  }

  _request(id) {
    const fields = this.pos.resumeFields();
    this._resumed = 'since' in fields;
    this.state = 'subscribing';
    const request = { type: 'subscribe', id, channel: this.channel, ...fields };
    if (this.presence) request.presence = true;
    return request;
  }

  _subscribed(frame, unsolicited) {
    const lost = this.pos.subscribed(frame, this._resumed, unsolicited);
    this._resumed = false;
    this.state = 'active';
    const info = {
      channel: this.channel,
      epoch: frame.epoch,
      offset: frame.offset,
      recovered: Boolean(frame.recovered),
      replayed: frame.replayed ?? 0,
    };
    this._call('onSubscribed', info);
    if (lost) {
      this._call('onRecoveryFailed', info);
      this.client._emit('recoveryFailed', info);
    }
  }

  _deliver(frame) {
    if (this.state === 'closed' || !this.pos.accept(frame.offset)) return;
    this._call('onMessage', frame.data, { channel: this.channel, offset: frame.offset, epoch: this.pos.epoch });
  }

  _broadcast(frame) {
    if (this.state !== 'active') return;
    this._call('onBroadcast', frame.data, { channel: this.channel, from: frame.from });
  }

  /**
   * A presence snapshot replaces the member set (after subscribing, after a reconnect, or
   * unsolicited when the gateway resynchronised): the differences from what was held go
   * out as onLeave/onJoin, then onPresence with the whole set.
   */
  _snapshot(frame) {
    if (!this.presence || this.state === 'closed' || this.state === 'revoked') return;
    const next = new Map((frame.members ?? []).map((m) => [memberKey(m), m]));
    const info = { channel: this.channel, sync: true };
    for (const [key, old] of this._members) if (!next.has(key)) this._call('onLeave', old, info);
    for (const [key, member] of next) {
      const old = this._members.get(key);
      if (!old || !sameMember(old, member)) this._call('onJoin', member, { ...info, update: Boolean(old) });
    }
    this._members = next;
    this._call('onPresence', this.members, info);
  }

  /** `join` (a conn already present: its meta changed) or `leave`. */
  _member(frame) {
    if (!this.presence || this.state === 'closed' || this.state === 'revoked' || !frame.member) return;
    const key = memberKey(frame.member);
    const info = { channel: this.channel, sync: false };
    if (frame.type === 'join') {
      const update = this._members.has(key);
      this._members.set(key, frame.member);
      this._call('onJoin', frame.member, { ...info, update });
    } else {
      const old = this._members.get(key);
      if (!old) return; // not in the set (already gone, or the snapshot was newer)
      this._members.delete(key);
      this._call('onLeave', old, info);
    }
    this._call('onPresence', this.members, info);
  }

  _revoked(reason) {
    this.state = 'revoked';
    const info = { channel: this.channel, reason };
    this._call('onUnsubscribed', info);
    this.client._emit('unsubscribed', info);
  }

  _call(name, ...args) {
    const fn = this.handlers[name];
    if (typeof fn !== 'function') return;
    try {
      fn(...args);
    } catch (err) {
      this.client._emit('error', err);
    }
  }
}

/**
 * Rejections of presence(), publish(), track() carry the gateway's code (forbidden,
 * too_large, rate_limited, presence_full, bad_request) or one of the client's own:
 * `timeout`, `disconnected` (a publish whose connection died unanswered), `closed`,
 * `cancelled` (a track() overtaken by untrack()), `unsupported` (over SSE).
 */
function requestError(code, message, frame) {
  return Object.assign(new Error(message ?? code), { code, frame });
}

/** A presence(), publish() or untrack() awaiting its answer; `lost`: what a dead connection does. */
class PendingRequest {
  constructor(frame, lost, resolve, reject) {
    this.frame = frame;
    this.lost = lost; // 'retry' (send again) | 'reject' | 'resolve' (moot on a new connection)
    this.resolve = resolve;
    this.reject = reject;
    this.id = null;
    this.timer = null;
    this.done = false;
  }
}

/** This client's presence in one channel: sent again on every new connection until untrack(). */
class Tracked {
  constructor(channel) {
    this.channel = channel;
    this.meta = {};
    this.state = 'pending'; // pending | sent | tracked
    this.id = null;
    this.waiters = [];
  }

  settle(error) {
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) (error ? waiter.reject(error) : waiter.resolve());
    return waiters.length;
  }
}

/** Connection states, in the order a healthy client goes through them. */
export const STATES = Object.freeze(['idle', 'connecting', 'connected', 'disconnected', 'closed']);

export class PgcastClient {
  /**
   * @param {object} [options] `url` (gateway base, default: where client.js came from),
   *   `token` (a string, or a function returning one or a promise of one), `transport`,
   *   `onRecoveryFailed`, `onStateChange`, the timing knobs of DEFAULTS, and for tests
   *   `WebSocket`, `EventSource`, `random`.
   */
  constructor(options = {}) {
    this.options = { ...DEFAULTS, ...options };
    this.endpoints = endpoints(options.url ?? defaultBase());
    this.state = 'idle';
    this.transport = null; // 'websocket' | 'sse' while connected
    this._token = options.token;
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this._EventSource = options.EventSource ?? globalThis.EventSource;
    this._random = options.random ?? Math.random;
    this._subs = new Map();
    this._tracked = new Map(); // channel -> Tracked
    this._outbox = []; // PendingRequests not sent yet
    this._listeners = new Map();
    this._pending = new Map(); // request id -> Subscription, Tracked, PendingRequest or 'refresh'
    this._nextId = 1;
    this._attempt = 0;
    this._wsFailures = 0;
    this._wsEverOpened = false;
    this._useSse = this.options.transport === 'sse' || typeof this._WebSocket !== 'function';
    this._conn = null; // the live connection's controller
    this._freshToken = null;
    this._wake = null;
    this._stopped = true;
    if (options.onStateChange) this.on('state', options.onStateChange);
    if (options.onRecoveryFailed) this.on('recoveryFailed', options.onRecoveryFailed);
    if (options.onClosed) this.on('closed', options.onClosed);
    if (options.autoConnect !== false) this.connect();
  }

  /**
   * Listen to 'state' ({state, previous, code, reason, delay}), 'error', 'recoveryFailed',
   * 'closed' ({code, reason}: the server ended the client for good: 4003, the application
   * disconnected this user, or 4001 with no token callback) and 'unsubscribed'
   * ({channel, reason}: the server revoked a subscription).
   */
  on(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(fn);
    return () => this._listeners.get(type).delete(fn);
  }

  /**
   * Subscribe; `handlers` is `onMessage(data, info)` or `{ onMessage, onSubscribed,
   * onRecoveryFailed, onError, onBroadcast, onUnsubscribed, presence, onPresence, onJoin,
   * onLeave }` (any presence handler implies `presence: true`).
   */
  subscribe(channel, handlers, position = {}) {
    if (this._subs.has(channel)) throw new Error(`already subscribed to ${channel}`);
    const h = typeof handlers === 'function' ? { onMessage: handlers } : { ...handlers };
    const sub = new Subscription(this, channel, h, new Position(position.epoch ?? null, position.offset ?? null));
    this._subs.set(channel, sub);
    if (this._conn) this._conn.changed();
    return sub;
  }

  /**
   * Join `channel`'s presence with `meta` (JSON; again: update it). Remembered: every new
   * connection tracks it again until `untrack()`. Resolves once the gateway confirmed.
   */
  track(channel, meta = {}) {
    let entry = this._tracked.get(channel);
    if (!entry) {
      entry = new Tracked(channel);
      this._tracked.set(channel, entry);
    }
    entry.meta = meta;
    entry.state = 'pending';
    const done = new Promise((resolve, reject) => entry.waiters.push({ resolve, reject }));
    if (this._conn) this._conn.changed();
    return done;
  }

  /** Leave `channel`'s presence (and stop tracking it on reconnects). */
  untrack(channel) {
    const entry = this._tracked.get(channel);
    if (!entry) return Promise.resolve();
    this._tracked.delete(channel);
    entry.settle(requestError('cancelled', `untrack(${channel}) before the gateway confirmed the track`));
    if (entry.state === 'pending' || !this._conn) return Promise.resolve(); // nothing on the gateway
    return this._ask({ type: 'untrack', channel }, 'resolve');
  }

  /** The members of `channel`'s presence now: a promise of `[{sub, conn, meta}, ...]`. */
  presence(channel) {
    return this._ask({ type: 'presence', channel }, 'retry');
  }

  /**
   * Send `data` (any JSON) to every other connection subscribed to `channel`, as a
   * `broadcast` (ephemeral: no offset, never replayed). Needs the token's `publish` claim.
   * Resolves once the gateway accepted it; queued while connecting (up to requestTimeout).
   */
  publish(channel, data) {
    return this._ask({ type: 'publish', channel, data }, 'reject');
  }

  /** Start (or restart after `close()`) connecting; called by the constructor unless autoConnect:false. */
  connect() {
    if (!this._stopped) return;
    this._stopped = false;
    const generation = (this._generation = (this._generation ?? 0) + 1);
    // Started on the next microtask: `client.on('state', ...)` right after `new` sees 'connecting'.
    this._loop = Promise.resolve().then(() => this._run(generation));
  }

  /** Close for good: no reconnect; subscriptions are kept and resume on a later `connect()`. */
  close() {
    this._stopped = true;
    this._abandonRequests('closed', 'the client was closed');
    if (this._conn) this._conn.abort(1000, 'client closed');
    this._connectionLost(); // a later connect() subscribes and tracks everything again
    this._wakeUp();
    this._setState('closed', {});
  }

  /** Skip the current backoff wait (e.g. the network came back). */
  reconnectNow() {
    this._wakeUp();
  }

  // -- internals ---------------------------------------------------------------------

  _emit(type, payload) {
    for (const fn of this._listeners.get(type) ?? []) {
      try {
        fn(payload);
      } catch (err) {
        if (type !== 'error') this._emit('error', err);
      }
    }
  }

  _setState(state, detail) {
    const previous = this.state;
    if (previous === state && state !== 'disconnected') return;
    this.state = state;
    this._emit('state', { state, previous, ...detail });
  }

  _wakeUp() {
    if (this._wake) this._wake();
  }

  _sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const online = () => done();
      globalThis.addEventListener?.('online', online);
      const self = this;
      function done() {
        clearTimeout(timer);
        globalThis.removeEventListener?.('online', online);
        self._wake = null;
        resolve();
      }
      this._wake = done;
    });
  }

  async _getToken() {
    const source = this._token;
    const token = typeof source === 'function' ? await source() : source;
    if (typeof token !== 'string' || token === '') throw new Error('pgcast: no token');
    return token;
  }

  async _run(generation) {
    // A loop left over from before close() + connect() ends at its next step.
    const live = () => !this._stopped && generation === this._generation;
    while (live()) {
      this._setState('connecting', { attempt: this._attempt });
      let outcome;
      try {
        const token = this._freshToken ?? (await this._getToken());
        this._freshToken = null;
        if (!live()) break;
        outcome = await (this._useSse ? this._runSse(token) : this._runWs(token));
      } catch (err) {
        this._emit('error', err);
        outcome = { opened: false, code: 0, reason: String(err?.message ?? err), lived: 0 };
      }
      if (!live()) break;
      this._afterConnection(outcome);
      const plan = reconnectPlan(outcome, {
        attempt: this._attempt,
        canRefetchToken: typeof this._token === 'function',
        options: this.options,
        random: this._random,
      });
      if (outcome.planned) continue;
      this._attempt += 1;
      if (plan.stop) {
        this._stopped = true;
        this._abandonRequests('closed', `the gateway ended the connection for good (${outcome.code}): ${plan.reason}`);
        this._setState('closed', { code: outcome.code, reason: plan.reason });
        this._emit('closed', { code: outcome.code, reason: plan.reason });
        break;
      }
      this._setState('disconnected', { code: outcome.code, reason: outcome.reason, delay: Math.round(plan.delay) });
      await this._sleep(plan.delay);
    }
  }

  _afterConnection(outcome) {
    if (outcome.lived >= this.options.healthyAfter) this._attempt = 0;
    this._connectionLost();
    if (this.options.transport !== 'auto' || outcome.planned) return;
    if (this._useSse) {
      // SSE failed too before ever working: the gateway is down, not WebSocket blocked.
      if (outcome.opened) this._sseWorked = true;
      else if (!this._sseWorked) {
        this._useSse = false;
        this._wsFailures = this.options.wsFailuresBeforeSse - 1;
      }
      return;
    }
    if (outcome.opened) this._wsEverOpened = true;
    else this._wsFailures += 1;
    if (!this._wsEverOpened && this._wsFailures >= this.options.wsFailuresBeforeSse && this._EventSource) {
      this._useSse = true; // WebSocket never got through (proxy, firewall): try SSE
    }
  }

  /** A connection ended (or close()): the next one subscribes, tracks and asks again. */
  _connectionLost() {
    for (const sub of this._subs.values()) if (sub.state !== 'failed') sub.state = 'pending';
    for (const entry of this._tracked.values()) entry.state = 'pending'; // a new connection has no presence
    const unanswered = [...this._pending.values()].filter((r) => r instanceof PendingRequest);
    this._pending.clear();
    for (const request of [...unanswered, ...this._outbox]) {
      if (request.lost === 'retry') {
        if (request.id !== null) this._outbox.unshift(request);
        request.id = null;
      } else if (request.lost === 'resolve') {
        this._settle(request, null, undefined); // an untrack: the dead connection's presence is gone
      } else if (request.id !== null) {
        this._settle(request, requestError('disconnected', `the connection closed before ${request.frame.type} was answered`));
      }
    }
  }

  _unsubscribe(sub) {
    if (this._subs.get(sub.channel) !== sub) return;
    this._subs.delete(sub.channel);
    const wasLive = sub.state === 'active' || sub.state === 'subscribing';
    sub.state = 'closed';
    if (this._conn && wasLive) this._conn.unsubscribed(sub);
  }

  _onFrame(frame, conn) {
    const sub = frame.channel === undefined ? undefined : this._subs.get(frame.channel);
    switch (frame.type) {
      case 'message':
        if (sub) sub._deliver(frame);
        return;
      case 'subscribed':
        if (sub && sub.state !== 'closed') {
          const unsolicited = sub.state === 'active' && !this._pending.has(frame.id);
          this._pending.delete(frame.id);
          sub._subscribed(frame, unsolicited);
        }
        return;
      case 'error':
        this._onError(frame, conn);
        return;
      case 'broadcast':
        if (sub) sub._broadcast(frame);
        return;
      case 'presence': // an answer to presence(), or a snapshot for a subscription
        if (!this._answer(frame, frame.members ?? []) && sub) sub._snapshot(frame);
        return;
      case 'join':
      case 'leave':
        if (sub) sub._member(frame);
        return;
      case 'tracked':
        this._onTracked(frame);
        return;
      case 'unsubscribed':
        if (frame.reason !== undefined && sub && (sub.state === 'active' || sub.state === 'subscribing')) {
          this._subs.delete(sub.channel); // revoked: ended for good, never resubscribed
          sub._revoked(frame.reason);
        }
        if (frame.id !== undefined) this._pending.delete(frame.id);
        return;
      case 'published':
      case 'untracked':
        this._answer(frame, undefined);
        return;
      default: // pong, refreshed, and types added later: liveness was noted
        if (frame.id !== undefined) this._pending.delete(frame.id); // answered: forget it
    }
  }

  _onError(frame, conn) {
    const request = this._pending.get(frame.id);
    if (request instanceof PendingRequest) {
      this._settle(request, requestError(frame.code, frame.message, frame));
      return;
    }
    this._pending.delete(frame.id);
    const error = Object.assign(new Error(frame.message ?? frame.code), { code: frame.code, frame });
    if (request instanceof Tracked) {
      this._trackFailed(request, error, conn);
      return;
    }
    if (request instanceof Subscription && request.state !== 'closed') {
      if (frame.code === 'rate_limited') {
        request.state = 'pending';
        setTimeout(() => conn.changed(), this.options.backoffBase);
        return;
      }
      request.state = 'failed';
      this._subs.delete(request.channel);
      request._call('onError', error);
      return;
    }
    this._emit('error', error);
  }

  _onTracked(frame) {
    const entry = this._pending.get(frame.id);
    this._pending.delete(frame.id);
    if (!(entry instanceof Tracked) || entry.id !== frame.id || this._tracked.get(entry.channel) !== entry) return;
    if (entry.state === 'sent') entry.state = 'tracked';
    entry.settle(null);
  }

  _trackFailed(entry, error, conn) {
    if (entry.id !== error.frame.id || this._tracked.get(entry.channel) !== entry) return; // superseded
    if (error.code === 'rate_limited') {
      entry.state = 'pending';
      setTimeout(() => conn.changed(), this.options.backoffBase);
      return;
    }
    this._tracked.delete(entry.channel); // refused: not tracked again on reconnect
    if (entry.settle(error) === 0) this._emit('error', error); // a re-track nobody awaits
  }

  /** Queue a request the app awaits; sent at once when a WebSocket is open, else on the next. */
  _ask(frame, lost) {
    return new Promise((resolve, reject) => {
      const request = new PendingRequest(frame, lost, resolve, reject);
      const ms = this.options.requestTimeout;
      request.timer = setTimeout(() => this._settle(request, requestError('timeout', `no answer to ${frame.type} within ${ms} ms`)), ms);
      this._outbox.push(request);
      if (this._conn) this._conn.changed();
    });
  }

  /** Settle the request that `frame` answers (by id); false when it answers none. */
  _answer(frame, value) {
    const request = frame.id === undefined ? undefined : this._pending.get(frame.id);
    if (!(request instanceof PendingRequest)) return false;
    this._settle(request, null, value);
    return true;
  }

  _settle(request, error, value) {
    clearTimeout(request.timer);
    const queued = this._outbox.indexOf(request);
    if (queued >= 0) this._outbox.splice(queued, 1);
    if (request.id !== null && this._pending.get(request.id) === request) this._pending.delete(request.id);
    if (request.done) return;
    request.done = true;
    if (error) request.reject(error);
    else request.resolve(value);
  }

  /** No connection will answer: reject what waits (tracks stay remembered for connect()). */
  _abandonRequests(code, message) {
    const requests = [...this._outbox, ...[...this._pending.values()].filter((r) => r instanceof PendingRequest)];
    for (const request of requests) this._settle(request, requestError(code, message));
    for (const entry of this._tracked.values()) entry.settle(requestError(code, message));
  }

  /** Over SSE nothing can be sent: presence, publish and track wait for a WebSocket in vain. */
  _refuseRequests() {
    const error = () => requestError('unsupported', 'presence and client messages need a WebSocket connection');
    for (const request of [...this._outbox]) this._settle(request, error());
    for (const entry of this._tracked.values()) entry.settle(error()); // tracked again over WebSocket
  }

  _id(request) {
    const id = this._nextId++;
    this._pending.set(id, request);
    return id;
  }

  /** Ask the token callback again before expiry; `send` delivers the new token. */
  _refreshTimer(token, send) {
    if (typeof this._token !== 'function') return () => {};
    let timer = null;
    let cancelled = false;
    const schedule = (current, retry) => {
      const delay = retry ?? refreshDelay(current, Date.now(), this.options.refreshMargin);
      if (delay === null || cancelled) return;
      timer = setTimeout(async () => {
        try {
          const fresh = await this._getToken();
          if (cancelled) return;
          send(fresh);
          schedule(fresh);
        } catch (err) {
          this._emit('error', err);
          schedule(current, 1000); // the gateway closes with 4001 if this never works
        }
      }, delay);
    };
    schedule(token);
    return () => {
      cancelled = true;
      clearTimeout(timer);
    };
  }

  _runWs(token) {
    return new Promise((resolve) => {
      const ws = new this._WebSocket(this.endpoints.ws, ['pgcast.v1', `bearer.${token}`]);
      const started = Date.now();
      let openedAt = null;
      let lastFrame = Date.now();
      let stopRefresh = () => {};
      let pinger = null;
      const send = (obj) => ws.readyState === 1 && ws.send(JSON.stringify(obj));
      const syncSubs = () => {
        if (this._conn !== conn || ws.readyState !== 1) return; // sent on the next connection
        // Tracks first: a presence snapshot that follows a subscribe then includes this client.
        for (const entry of this._tracked.values()) {
          if (entry.state !== 'pending') continue;
          entry.state = 'sent';
          entry.id = this._id(entry);
          send({ type: 'track', id: entry.id, channel: entry.channel, meta: entry.meta });
        }
        for (const sub of this._subs.values()) if (sub.state === 'pending') send(sub._request(this._id(sub)));
        for (const request of this._outbox.splice(0)) {
          request.id = this._id(request);
          send({ ...request.frame, id: request.id });
        }
      };
      const finish = (code, reason) => {
        if (this._conn !== conn) return;
        this._conn = null;
        this.transport = null;
        clearTimeout(connectTimer);
        clearInterval(pinger);
        stopRefresh();
        ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
        if (ws.readyState < 2) ws.close(1000);
        resolve({ opened: openedAt !== null, code, reason, lived: openedAt === null ? 0 : Date.now() - openedAt });
      };
      const conn = {
        changed: syncSubs,
        unsubscribed: (sub) => send({ type: 'unsubscribe', channel: sub.channel }),
        abort: finish,
      };
      this._conn = conn;
      const connectTimer = setTimeout(() => finish(0, 'connect timeout'), this.options.connectTimeout);
      ws.onopen = () => {
        clearTimeout(connectTimer);
        openedAt = lastFrame = Date.now();
        this.transport = 'websocket';
        this._setState('connected', { transport: 'websocket', took: openedAt - started });
        syncSubs();
        stopRefresh = this._refreshTimer(token, (fresh) => send({ type: 'refresh', id: this._id('refresh'), token: fresh }));
        pinger = setInterval(() => {
          if (Date.now() - lastFrame > this.options.pingInterval + this.options.pongTimeout) {
            finish(0, 'no frame from the gateway: connection presumed dead');
          } else {
            send({ type: 'ping' });
          }
        }, this.options.pingInterval);
      };
      ws.onmessage = (event) => {
        lastFrame = Date.now();
        let frame;
        try {
          frame = JSON.parse(event.data);
        } catch (err) {
          this._emit('error', err);
          return;
        }
        this._onFrame(frame, conn);
      };
      ws.onclose = (event) => finish(event.code, event.reason);
    });
  }

  /**
   * SSE: one EventSource per set of channels. The token rides in `?token=` (EventSource
   * cannot set headers; the gateway never logs query strings) and positions in
   * `?lastEventId=`, built from this client's own per-channel positions. The client, not
   * EventSource, reconnects: each new stream gets a fresh token. Subscribing,
   * unsubscribing and token refresh reopen the stream (a "planned" reconnect, no delay).
   */
  _runSse(token) {
    return new Promise((resolve) => {
      let es = null;
      let openedAt = null;
      let stopRefresh = () => {};
      const finish = (code, reason, planned = false) => {
        if (this._conn !== conn) return;
        this._conn = null;
        this.transport = null;
        stopRefresh();
        if (es) {
          es.onopen = es.onmessage = es.onerror = null;
          es.close();
        }
        resolve({ opened: openedAt !== null, code, reason, planned, lived: openedAt === null ? 0 : Date.now() - openedAt });
      };
      const reopen = (reason) => finish(0, reason, true);
      const conn = {
        changed: () => {
          this._refuseRequests();
          for (const sub of this._subs.values()) if (sub.state === 'pending') return reopen('subscriptions changed');
          return undefined;
        },
        unsubscribed: () => reopen('subscriptions changed'),
        abort: finish,
      };
      this._conn = conn;
      this._refuseRequests();
      const subs = [...this._subs.values()].filter((sub) => sub.state === 'pending');
      if (subs.length === 0) return; // nothing to stream yet: conn.changed() reopens
      const params = new URLSearchParams();
      const positions = {};
      for (const sub of subs) {
        params.append('channel', sub.channel);
        const request = sub._request(null); // marks it subscribing; the stream carries the rest
        if ('since' in request) positions[sub.channel] = `${request.epoch}:${request.since}`;
      }
      params.set('token', token);
      if (Object.keys(positions).length) params.set('lastEventId', base64url(JSON.stringify(positions)));
      es = new this._EventSource(`${this.endpoints.sse}?${params}`);
      es.onopen = () => {
        openedAt = Date.now();
        this.transport = 'sse';
        this._setState('connected', { transport: 'sse' });
        stopRefresh = this._refreshTimer(token, (fresh) => {
          this._freshToken = fresh; // the next stream uses it: no second callback call
          reopen('token refresh');
        });
      };
      es.onmessage = (event) => {
        let frame;
        try {
          frame = JSON.parse(event.data);
        } catch (err) {
          this._emit('error', err);
          return;
        }
        if (frame.type === 'close') finish(frame.code ?? 0, frame.reason ?? '');
        else this._onFrame(frame, conn);
      };
      es.onerror = () => finish(0, 'event stream failed'); // we reconnect, with a fresh token
    });
  }
}

function base64url(text) {
  const bytes = new TextEncoder().encode(text);
  let binary = '';
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** Shorthand: `const pg = connect({ token: () => fetch('/token').then(r => r.text()) })`. */
export function connect(options = {}) {
  return new PgcastClient(options);
}
