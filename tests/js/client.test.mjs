// The browser client's state machine under node's test runner, with fake sockets:
// auth, resume, de-duplication, close codes, token refresh, liveness, failures.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, test } from 'node:test';

import {
  PgcastClient,
  Position,
  backoffDelay,
  compareOffsets,
  endpoints,
  refreshDelay,
  tokenExpiry,
} from '../../clients/js/src/client.js';
import { closeClients, FakeEventSource, FakeWebSocket, jwt, makeClient, waitFor } from './fakes.mjs';


async function connected(client) {
  const ws = await waitFor(() => FakeWebSocket.last(), 'a socket');
  ws.open();
  assert.equal(client.state, 'connected');
  return ws;
}

function subscribedReply(ws, channel, extra = {}) {
  const request = ws.sentOfType('subscribe').findLast((f) => f.channel === channel);
  ws.receive({ type: 'subscribed', id: request.id, channel, epoch: 'e1', offset: '0', recovered: false, replayed: 0, ...extra });
  return request;
}

beforeEach(() => {
  FakeWebSocket.reset();
  FakeEventSource.reset();
});

afterEach(() => {
  closeClients();
});

test('pure helpers: backoff bounds, offsets, endpoints, token expiry', () => {
  for (let attempt = 0; attempt < 40; attempt += 1) {
    const delay = backoffDelay(attempt, 100, 5000);
    assert.ok(delay >= 0 && delay <= Math.min(5000, 100 * 2 ** attempt));
  }
  assert.equal(backoffDelay(3, 100, 5000, () => 1), 800);
  assert.equal(compareOffsets('10', '9'), 1);
  assert.equal(compareOffsets('9', '10'), -1);
  assert.equal(compareOffsets('7', '7'), 0);
  assert.ok(Number.isNaN(compareOffsets('a', 'b')));
  assert.deepEqual(endpoints('https://rt.example.com'), { ws: 'wss://rt.example.com/ws', sse: 'https://rt.example.com/sse' });
  assert.deepEqual(endpoints('http://h:8080/rt/client.js'), { ws: 'ws://h:8080/rt/ws', sse: 'http://h:8080/rt/sse' });
  assert.deepEqual(endpoints('ws://h/ws'), { ws: 'ws://h/ws', sse: 'http://h/sse' });
  assert.equal(tokenExpiry(jwt({ exp: 1234 })), 1234000);
  assert.equal(tokenExpiry('garbage'), null);
  assert.equal(refreshDelay(jwt({ exp: 10 }), 0, 30000), 8000);
});

test('without `url`, a client not loaded from a gateway says so (as when bundled from npm)', () => {
  assert.throws(() => new PgcastClient({ token: 't', autoConnect: false }), /pass the gateway as `url`/);
});

test('Position: resume fields, duplicates refused, recovered:false is a loss', () => {
  const pos = new Position();
  assert.deepEqual(pos.resumeFields(), {});
  assert.equal(pos.subscribed({ epoch: 'e', offset: '4', recovered: false }, false, false), false);
  assert.ok(pos.accept('5'));
  assert.ok(!pos.accept('5'));
  assert.ok(!pos.accept('3'));
  assert.deepEqual(pos.resumeFields(), { since: '5', epoch: 'e' });
  assert.equal(pos.subscribed({ epoch: 'e', offset: '9', recovered: true }, true, false), false);
  assert.ok(pos.accept('6'));
  assert.equal(pos.subscribed({ epoch: 'f', offset: '1', recovered: false }, true, false), true);
});

test('authenticates with the subprotocol and subscribes once open', async () => {
  const client = makeClient();
  client.subscribe('articles', () => {});
  const ws = await connected(client);
  assert.equal(ws.url, 'ws://gw.test/ws');
  assert.deepEqual(ws.protocols, ['pgcast.v1', 'bearer.tok']);
  assert.equal(ws.sentOfType('subscribe').length, 1);
  assert.equal(ws.sentOfType('subscribe')[0].since, undefined);
});

test('resumes each channel from its last offset and epoch, delivering each offset once', async () => {
  const got = [];
  const client = makeClient();
  client.subscribe('articles', (data, info) => got.push(`${info.offset}:${data.n}`));
  let ws = await connected(client);
  subscribedReply(ws, 'articles', { offset: '2' });
  ws.receive({ type: 'message', channel: 'articles', offset: '3', data: { n: 3 } });
  ws.receive({ type: 'message', channel: 'articles', offset: '3', data: { n: 3 } });
  ws.serverClose(1006);
  ws = await waitFor(() => FakeWebSocket.instances[1], 'a reconnect');
  ws.open();
  const resume = ws.sentOfType('subscribe')[0];
  assert.equal(resume.since, '3');
  assert.equal(resume.epoch, 'e1');
  ws.receive({ type: 'subscribed', id: resume.id, channel: 'articles', epoch: 'e1', offset: '5', recovered: true, replayed: 2 });
  for (const offset of ['3', '4', '5']) {
    ws.receive({ type: 'message', channel: 'articles', offset, data: { n: Number(offset) } });
  }
  assert.deepEqual(got, ['3:3', '4:4', '5:5']);
});

test('recovered:false after a resume, or unsolicited, calls onRecoveryFailed', async () => {
  const failures = [];
  const client = makeClient({ onRecoveryFailed: (info) => failures.push(`client:${info.epoch}`) });
  client.subscribe('orders', { onMessage() {}, onRecoveryFailed: (info) => failures.push(`sub:${info.epoch}`) });
  let ws = await connected(client);
  subscribedReply(ws, 'orders');
  assert.deepEqual(failures, []); // a first subscribe has nothing to recover
  ws.receive({ type: 'message', channel: 'orders', offset: '1', data: {} });
  ws.receive({ type: 'subscribed', channel: 'orders', epoch: 'e2', offset: '0', recovered: false, replayed: 0 });
  assert.deepEqual(failures, ['sub:e2', 'client:e2']);
  ws.serverClose(1006);
  ws = await waitFor(() => FakeWebSocket.instances[1], 'a reconnect');
  ws.open();
  assert.equal(ws.sentOfType('subscribe')[0].epoch, 'e2');
  subscribedReply(ws, 'orders', { epoch: 'e3' });
  assert.deepEqual(failures.slice(2), ['sub:e3', 'client:e3']);
});

test('1012 reconnects promptly (jitter only), other closes back off', async () => {
  const client = makeClient({ backoffBase: 5000, backoffCap: 5000, restartJitter: 20, random: () => 0.99 });
  const ws = await connected(client);
  const closedAt = Date.now();
  ws.serverClose(1012, 'shutting down');
  await waitFor(() => FakeWebSocket.instances[1], 'a prompt reconnect', 1000);
  assert.ok(Date.now() - closedAt < 1000);
});

test('4001 asks the token callback again; with a fixed token the client stops', async () => {
  let calls = 0;
  const client = makeClient({ token: async () => `t${++calls}` });
  const ws = await connected(client);
  assert.deepEqual(ws.protocols, ['pgcast.v1', 'bearer.t1']);
  ws.serverClose(4001, 'token expired');
  const again = await waitFor(() => FakeWebSocket.instances[1], 'a reconnect');
  assert.deepEqual(again.protocols, ['pgcast.v1', 'bearer.t2']);

  FakeWebSocket.reset();
  const states = [];
  const fixed = makeClient({ onStateChange: (s) => states.push(s.state) });
  const ws2 = await connected(fixed);
  ws2.serverClose(4001);
  await waitFor(() => fixed.state === 'closed', 'closed');
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(FakeWebSocket.instances.length, 1);
  assert.deepEqual(states, ['connecting', 'connected', 'closed']);
});

test('refreshes the token before it expires, as a refresh frame', async () => {
  let calls = 0;
  const token = async () => jwt({ sub: '1', n: ++calls, exp: Date.now() / 1000 + 0.5 });
  const client = makeClient({ token });
  const ws = await connected(client);
  const refresh = await waitFor(() => ws.sentOfType('refresh')[0], 'a refresh frame');
  assert.equal(JSON.parse(Buffer.from(refresh.token.split('.')[1], 'base64url')).n, 2);
  assert.equal(FakeWebSocket.instances.length, 1);
});

test('a silent connection is declared dead and replaced', async () => {
  const client = makeClient({ pingInterval: 30, pongTimeout: 30 });
  const ws = await connected(client);
  await waitFor(() => ws.sentOfType('ping').length > 0, 'a ping');
  await waitFor(() => FakeWebSocket.instances.length === 2, 'a new socket', 2000);
});

test('unsubscribe sends unsubscribe and the channel is not resumed', async () => {
  const got = [];
  const client = makeClient();
  const sub = client.subscribe('a', (d) => got.push(d));
  client.subscribe('b', () => {});
  let ws = await connected(client);
  subscribedReply(ws, 'a');
  subscribedReply(ws, 'b');
  sub.unsubscribe();
  assert.deepEqual(ws.sentOfType('unsubscribe'), [{ type: 'unsubscribe', channel: 'a' }]);
  ws.receive({ type: 'message', channel: 'a', offset: '1', data: 1 });
  assert.deepEqual(got, []);
  ws.serverClose(1006);
  ws = await waitFor(() => FakeWebSocket.instances[1], 'a reconnect');
  ws.open();
  assert.deepEqual(ws.sentOfType('subscribe').map((f) => f.channel), ['b']);
});

test('a refused subscription reaches onError and is dropped', async () => {
  const errors = [];
  const client = makeClient();
  client.subscribe('secret', { onMessage() {}, onError: (err) => errors.push(err.code) });
  const ws = await connected(client);
  const request = ws.sentOfType('subscribe')[0];
  ws.receive({ type: 'error', id: request.id, code: 'forbidden', message: 'no' });
  assert.deepEqual(errors, ['forbidden']);
  assert.doesNotThrow(() => client.subscribe('secret', () => {}));
});

test('close() stops reconnecting; connect() resumes', async () => {
  const client = makeClient();
  const ws = await connected(client);
  client.close();
  assert.equal(client.state, 'closed');
  await new Promise((resolve) => setTimeout(resolve, 60));
  assert.equal(FakeWebSocket.instances.length, 1);
  assert.equal(ws.readyState, 3);
  client.connect();
  await waitFor(() => FakeWebSocket.instances.length === 2, 'a new socket');
});

function sseFrames(es) {
  const url = new URL(es.url);
  const last = url.searchParams.get('lastEventId');
  return {
    channels: url.searchParams.getAll('channel'),
    token: url.searchParams.get('token'),
    positions: last ? JSON.parse(Buffer.from(last, 'base64url').toString()) : null,
  };
}

test('SSE: token and positions in the query, frames delivered, resume after a failure', async () => {
  const got = [];
  let calls = 0;
  const client = makeClient({ transport: 'sse', token: async () => `s${++calls}` });
  client.subscribe('orders', (data, info) => got.push(info.offset));
  let es = await waitFor(() => FakeEventSource.last(), 'an event source');
  assert.deepEqual(sseFrames(es), { channels: ['orders'], token: 's1', positions: null });
  assert.equal(es.url.split('?')[0], 'http://gw.test/sse');
  es.open();
  assert.equal(client.transport, 'sse');
  es.emit('message', { type: 'subscribed', channel: 'orders', epoch: 'e1', offset: '4', recovered: false, replayed: 0 });
  es.emit('message', { type: 'message', channel: 'orders', offset: '5', data: {} });
  es.fail();
  es = await waitFor(() => FakeEventSource.instances[1], 'a new event source');
  assert.deepEqual(sseFrames(es), { channels: ['orders'], token: 's2', positions: { orders: 'e1:5' } });
  es.open();
  es.emit('message', { type: 'subscribed', channel: 'orders', epoch: 'e1', offset: '6', recovered: true, replayed: 1 });
  es.emit('message', { type: 'message', channel: 'orders', offset: '5', data: {} });
  es.emit('message', { type: 'message', channel: 'orders', offset: '6', data: {} });
  assert.deepEqual(got, ['5', '6']);
  assert.equal(es.readyState, 1, 'the stream that works stays open');
});

test('SSE: subscribing reopens the stream at once with every channel', async () => {
  const client = makeClient({ transport: 'sse' });
  client.subscribe('a', () => {});
  const es = await waitFor(() => FakeEventSource.last(), 'an event source');
  es.open();
  es.emit('message', { type: 'subscribed', channel: 'a', epoch: 'e', offset: '2', recovered: false, replayed: 0 });
  client.subscribe('b', () => {});
  const next = await waitFor(() => FakeEventSource.instances[1], 'a reopened stream');
  assert.equal(es.readyState, 2);
  assert.deepEqual(sseFrames(next).channels, ['a', 'b']);
  assert.deepEqual(sseFrames(next).positions, { a: 'e:2' });
});

test('SSE: a close event is a close code (4001 fetches a new token)', async () => {
  let calls = 0;
  const client = makeClient({ transport: 'sse', token: async () => `t${++calls}` });
  client.subscribe('a', () => {});
  const es = await waitFor(() => FakeEventSource.last(), 'an event source');
  es.open();
  es.emit('message', { type: 'close', code: 4001, reason: 'token expired' });
  const next = await waitFor(() => FakeEventSource.instances[1], 'a new stream');
  assert.equal(sseFrames(next).token, 't2');
});

test('auto: WebSocket that never opens falls back to SSE; SSE that fails too goes back', async () => {
  const client = makeClient({ wsFailuresBeforeSse: 2 });
  client.subscribe('a', () => {});
  for (let i = 0; i < 2; i += 1) {
    const ws = await waitFor(() => FakeWebSocket.instances[i], `socket ${i}`);
    ws.serverClose(1006); // blocked: closed before open
  }
  const es = await waitFor(() => FakeEventSource.last(), 'the SSE fallback');
  es.fail(); // SSE does not work either: the gateway is down, not WebSocket blocked
  const ws = await waitFor(() => FakeWebSocket.instances[2], 'WebSocket again');
  ws.open();
  assert.equal(client.transport, 'websocket');
});

test('auto: once SSE worked, it stays the transport', async () => {
  const client = makeClient({ wsFailuresBeforeSse: 1 });
  client.subscribe('a', () => {});
  (await waitFor(() => FakeWebSocket.instances[0], 'a socket')).serverClose(1006);
  let es = await waitFor(() => FakeEventSource.last(), 'the SSE fallback');
  es.open();
  es.fail();
  es = await waitFor(() => FakeEventSource.instances[1], 'SSE again');
  assert.equal(FakeWebSocket.instances.length, 1);
});

test('close() then connect() at once runs one connection loop, not two', async () => {
  let release;
  const gate = new Promise((resolve) => {
    release = resolve;
  });
  const client = makeClient({ token: () => gate.then(() => 'tok') });
  await new Promise((resolve) => setTimeout(resolve, 10)); // the first loop waits for its token
  client.close();
  client.connect();
  release();
  await waitFor(() => FakeWebSocket.instances.length >= 1, 'a socket');
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(FakeWebSocket.instances.length, 1);
});
