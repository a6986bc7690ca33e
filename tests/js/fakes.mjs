// Test doubles for the browser client under node: a scriptable WebSocket and EventSource.
// The real-network tests run the same client in Chromium against a real gateway
// (tests/browser/); these drive every branch of its state machine quickly.
import { PgcastClient } from '../../clients/js/src/client.js';

export class FakeWebSocket {
  static instances = [];

  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 0;
    this.sent = [];
    FakeWebSocket.instances.push(this);
  }

  static reset() {
    FakeWebSocket.instances = [];
  }

  static last() {
    return FakeWebSocket.instances.at(-1);
  }

  send(text) {
    if (this.readyState !== 1) throw new Error('send on a socket that is not open');
    this.sent.push(JSON.parse(text));
  }

  close(code = 1000, reason = '') {
    if (this.readyState >= 2) return;
    this.readyState = 3;
    queueMicrotask(() => this.onclose?.({ code, reason }));
  }

  // -- what the "server" does --
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }

  receive(frame) {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }

  serverClose(code, reason = '') {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  sentOfType(type) {
    return this.sent.filter((f) => f.type === type);
  }
}

export class FakeEventSource {
  static instances = [];

  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.listeners = new Map();
    FakeEventSource.instances.push(this);
  }

  static reset() {
    FakeEventSource.instances = [];
  }

  static last() {
    return FakeEventSource.instances.at(-1);
  }

  addEventListener(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, []);
    this.listeners.get(type).push(fn);
  }

  close() {
    this.readyState = 2;
  }

  // -- what the "server" does --
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }

  emit(type, data, lastEventId = '') {
    const event = { type, data: JSON.stringify(data), lastEventId };
    if (type === 'message') this.onmessage?.(event);
    for (const fn of this.listeners.get(type) ?? []) fn(event);
  }

  fail() {
    this.readyState = 2;
    this.onerror?.({});
  }
}

export function jwt(claims) {
  const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
  return `${b64({ alg: 'HS256' })}.${b64(claims)}.sig`;
}

export async function waitFor(predicate, what, timeout = 3000) {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    const value = predicate();
    if (value) return value;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error(`timed out waiting for ${what}`);
}

const made = [];

// A client on the fake sockets with short backoffs; closeClients() closes every one made.
export function makeClient(options = {}) {
  const client = new PgcastClient({
    url: 'http://gw.test',
    token: 'tok',
    WebSocket: FakeWebSocket,
    EventSource: FakeEventSource,
    backoffBase: 10,
    backoffCap: 40,
    restartJitter: 5,
    ...options,
  });
  made.push(client);
  return client;
}

export function closeClients() {
  while (made.length) made.pop().close();
}
