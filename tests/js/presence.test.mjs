// Presence, client messages and server-side control in the browser client, with fake
// sockets: track/untrack and re-track after a reconnect, presence snapshots and
// join/leave, presence(), publish() and broadcasts, 4003, revoked subscriptions.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, test } from 'node:test';

import { reconnectPlan } from '../../clients/js/src/client.js';
import { closeClients, FakeEventSource, FakeWebSocket, makeClient, waitFor } from './fakes.mjs';


async function connected(index = FakeWebSocket.instances.length) {
  const ws = await waitFor(() => FakeWebSocket.instances[index], `socket ${index}`);
  ws.open();
  return ws;
}

const member = (conn, sub, meta = {}) => ({ sub, conn, meta });

function reply(ws, type, extra = {}) {
  const request = ws.sent.findLast((f) => f.type === type);
  ws.receive({ id: request.id, channel: request.channel, ...extra });
  return request;
}

/** Settles a promise into 'ok' or its error code, so that a test can assert either. */
function outcome(promise) {
  return promise.then(
    (value) => ({ ok: value }),
    (err) => ({ code: err.code }),
  );
}

beforeEach(() => {
  FakeWebSocket.reset();
  FakeEventSource.reset();
});

afterEach(() => {
  closeClients();
});

test('track is sent once open, resolves on tracked, and is sent again after a reconnect', async () => {
  const client = makeClient();
  const done = client.track('room', { name: 'Ada' });
  let ws = await connected(0);
  const request = reply(ws, 'track', { type: 'tracked' });
  assert.deepEqual(request, { type: 'track', id: request.id, channel: 'room', meta: { name: 'Ada' } });
  await done;
  ws.serverClose(1006);
  ws = await connected(1);
  assert.deepEqual(ws.sentOfType('track').map((f) => [f.channel, f.meta]), [['room', { name: 'Ada' }]]);
  reply(ws, 'track', { type: 'tracked' });
  const updated = client.track('room', { name: 'Ada', typing: true }); // a meta update
  assert.deepEqual(ws.sentOfType('track').at(-1).meta, { name: 'Ada', typing: true });
  reply(ws, 'track', { type: 'tracked' });
  await updated;

  const left = client.untrack('room');
  assert.deepEqual(ws.sentOfType('untrack').map((f) => f.channel), ['room']);
  reply(ws, 'untrack', { type: 'untracked' });
  await left;
  ws.serverClose(1006);
  ws = await connected(2);
  assert.equal(ws.sentOfType('track').length, 0, 'untracked: not tracked again');
});

test('a refused track rejects with the code and is not tracked again', async () => {
  const client = makeClient();
  const done = outcome(client.track('full', { n: 1 }));
  let ws = await connected(0);
  reply(ws, 'track', { type: 'error', code: 'presence_full', message: 'channel full' });
  assert.deepEqual(await done, { code: 'presence_full' });
  ws.serverClose(1006);
  ws = await connected(1);
  assert.equal(ws.sentOfType('track').length, 0);
});

test('subscribe with presence: a snapshot, then joins, meta updates and leaves', async () => {
  const events = [];
  const client = makeClient();
  const sub = client.subscribe('room', {
    presence: true,
    onJoin: (m, info) => events.push(`join ${m.conn}${info.update ? ' (update)' : ''}`),
    onLeave: (m) => events.push(`leave ${m.conn}`),
    onPresence: (members) => events.push(`set ${members.map((m) => m.conn).join(',')}`),
  });
  const ws = await connected(0);
  const request = reply(ws, 'subscribe', { type: 'subscribed', epoch: 'e', offset: '0', recovered: false });
  assert.equal(request.presence, true);
  ws.receive({ type: 'presence', channel: 'room', members: [member('c1', 'ada'), member('c2', 'bob')] });
  ws.receive({ type: 'join', channel: 'room', member: member('c3', 'cy') });
  ws.receive({ type: 'join', channel: 'room', member: member('c1', 'ada', { typing: true }) });
  ws.receive({ type: 'leave', channel: 'room', member: member('c2', 'bob') });
  ws.receive({ type: 'leave', channel: 'room', member: member('c9', 'gone') }); // unknown: ignored
  assert.deepEqual(events, [
    'join c1', 'join c2', 'set c1,c2',
    'join c3', 'set c1,c2,c3',
    'join c1 (update)', 'set c1,c2,c3',
    'leave c2', 'set c1,c3',
  ]);
  assert.deepEqual(sub.members, [member('c1', 'ada', { typing: true }), member('c3', 'cy')]);
});

test('after a reconnect the first snapshot replaces the set: leaves and joins for the difference', async () => {
  const events = [];
  const client = makeClient();
  const sub = client.subscribe('room', {
    onJoin: (m, info) => events.push(`join ${m.conn} sync:${info.sync}`),
    onLeave: (m, info) => events.push(`leave ${m.conn} sync:${info.sync}`),
  });
  assert.equal(sub.presence, true, 'a presence handler implies presence');
  let ws = await connected(0);
  reply(ws, 'subscribe', { type: 'subscribed', epoch: 'e', offset: '3', recovered: false });
  ws.receive({ type: 'presence', channel: 'room', members: [member('me1', 'ada'), member('c2', 'bob')] });
  ws.serverClose(1006);
  ws = await connected(1);
  const resume = reply(ws, 'subscribe', { type: 'subscribed', epoch: 'e', offset: '3', recovered: true });
  assert.deepEqual([resume.since, resume.presence], ['3', true]);
  assert.equal(sub.members.length, 2, 'the old set is kept until the snapshot');
  ws.receive({ type: 'presence', channel: 'room', members: [member('c2', 'bob'), member('me2', 'ada')] });
  assert.deepEqual(events.slice(2), ['leave me1 sync:true', 'join me2 sync:true']);
  assert.deepEqual(sub.members.map((m) => m.conn), ['c2', 'me2']);
  // An unsolicited snapshot later (the gateway lost its Redis link) replaces it again.
  ws.receive({ type: 'presence', channel: 'room', members: [member('me2', 'ada')] });
  assert.deepEqual(events.at(-1), 'leave c2 sync:true');
});

test('presence() resolves with the members, and is asked again after a lost connection', async () => {
  const client = makeClient();
  const first = client.presence('room');
  let ws = await connected(0);
  const asked = ws.sentOfType('presence')[0];
  assert.deepEqual(asked, { type: 'presence', channel: 'room', id: asked.id });
  ws.serverClose(1006); // unanswered
  ws = await connected(1);
  reply(ws, 'presence', { type: 'presence', members: [member('c1', 'ada')] });
  assert.deepEqual(await first, [member('c1', 'ada')]);
  const refused = outcome(client.presence('secret'));
  reply(ws, 'presence', { type: 'error', code: 'forbidden', message: 'no presence claim' });
  assert.deepEqual(await refused, { code: 'forbidden' });
});

test('publish resolves on published, rejects with the code, and broadcasts reach onBroadcast', async () => {
  const got = [];
  const client = makeClient();
  client.subscribe('room', { onMessage() {}, onBroadcast: (data, info) => got.push([data, info.from]) });
  const ws = await connected(0);
  reply(ws, 'subscribe', { type: 'subscribed', epoch: 'e', offset: '0', recovered: false });
  const sent = client.publish('room', { typing: true });
  const request = reply(ws, 'publish', { type: 'published' });
  assert.deepEqual(request, { type: 'publish', channel: 'room', data: { typing: true }, id: request.id });
  assert.deepEqual(await sent, { ok: undefined }.ok);
  ws.receive({ type: 'broadcast', channel: 'room', from: '42', data: { typing: true } });
  assert.deepEqual(got, [[{ typing: true }, '42']]);
  for (const code of ['forbidden', 'too_large', 'rate_limited']) {
    const refused = outcome(client.publish('room', 'x'));
    reply(ws, 'publish', { type: 'error', code, message: code });
    assert.deepEqual(await refused, { code });
  }
});

test('a publish is queued while connecting; one unanswered when the connection dies is rejected', async () => {
  const client = makeClient({ requestTimeout: 200 });
  const early = outcome(client.publish('room', 1));
  let ws = await connected(0);
  reply(ws, 'publish', { type: 'published' });
  assert.deepEqual(await early, { ok: undefined });
  const lost = outcome(client.publish('room', 2));
  ws.serverClose(1006);
  assert.deepEqual(await lost, { code: 'disconnected' });
  ws = await connected(1);
  assert.equal(ws.sentOfType('publish').length, 0, 'never sent twice');
  const unanswered = outcome(client.publish('room', 3));
  assert.deepEqual(await unanswered, { code: 'timeout' });
});

test('4003: closed for good with the application reason, even with a token callback', async () => {
  const states = [];
  const closed = [];
  const client = makeClient({ token: async () => 'fresh', onClosed: (info) => closed.push(info) });
  client.on('state', (s) => states.push(s.state));
  const ws = await connected(0);
  const pending = outcome(client.presence('room')); // would be asked again on a reconnect
  ws.serverClose(4003, 'banned');
  await waitFor(() => client.state === 'closed', 'closed');
  assert.deepEqual(closed, [{ code: 4003, reason: 'banned' }]);
  assert.deepEqual(await pending, { code: 'closed' });
  await new Promise((resolve) => setTimeout(resolve, 60));
  assert.equal(FakeWebSocket.instances.length, 1, 'no reconnect after 4003');
  assert.deepEqual(states, ['connecting', 'connected', 'closed']);
  assert.deepEqual(reconnectPlan({ code: 4003, reason: 'x' }, { attempt: 0, canRefetchToken: true, options: {}, random: Math.random }), {
    stop: true,
    delay: 0,
    reason: 'x',
  });
});

test('4003 over SSE (a close event) stops too', async () => {
  const closed = [];
  const client = makeClient({ transport: 'sse', token: async () => 't', onClosed: (info) => closed.push(info) });
  client.subscribe('a', () => {});
  const es = await waitFor(() => FakeEventSource.last(), 'an event source');
  es.open();
  es.emit('message', { type: 'close', code: 4003, reason: 'fraud' });
  await waitFor(() => client.state === 'closed', 'closed');
  assert.deepEqual(closed, [{ code: 4003, reason: 'fraud' }]);
  await new Promise((resolve) => setTimeout(resolve, 60));
  assert.equal(FakeEventSource.instances.length, 1);
});

test('a revoked subscription ends: onUnsubscribed, no more messages, not resubscribed', async () => {
  const got = [];
  const ended = [];
  const client = makeClient();
  client.on('unsubscribed', (info) => ended.push(`client:${info.channel}:${info.reason}`));
  const sub = client.subscribe('orders', {
    onMessage: (data) => got.push(data),
    onUnsubscribed: (info) => ended.push(`sub:${info.reason}`),
  });
  client.subscribe('news', () => {});
  let ws = await connected(0);
  reply(ws, 'subscribe', { type: 'subscribed', epoch: 'e', offset: '0', recovered: false });
  ws.receive({ type: 'unsubscribed', channel: 'orders', reason: 'revoked' });
  ws.receive({ type: 'message', channel: 'orders', offset: '1', data: 'late' });
  assert.deepEqual(ended, ['sub:revoked', 'client:orders:revoked']);
  assert.deepEqual(got, []);
  assert.equal(sub.state, 'revoked');
  ws.serverClose(1006);
  ws = await connected(1);
  assert.deepEqual(ws.sentOfType('subscribe').map((f) => f.channel), ['news']);
});

test('the answer to our own unsubscribe is not a revocation of a new subscription', async () => {
  const ended = [];
  const client = makeClient();
  const first = client.subscribe('a', () => {});
  const ws = await connected(0);
  reply(ws, 'subscribe', { type: 'subscribed', epoch: 'e', offset: '0', recovered: false });
  first.unsubscribe();
  const second = client.subscribe('a', { onMessage() {}, onUnsubscribed: () => ended.push('x') });
  ws.receive({ type: 'unsubscribed', channel: 'a' });
  assert.deepEqual(ended, []);
  assert.equal(second.state, 'subscribing');
});

test('over SSE, presence and client messages are refused at once (they need a WebSocket)', async () => {
  const client = makeClient({ transport: 'sse' });
  client.subscribe('a', () => {});
  const es = await waitFor(() => FakeEventSource.last(), 'an event source');
  es.open();
  assert.deepEqual(await outcome(client.publish('a', 1)), { code: 'unsupported' });
  assert.deepEqual(await outcome(client.track('a', {})), { code: 'unsupported' });
});

test('close() rejects what waits; connect() subscribes and tracks again', async () => {
  const client = makeClient();
  client.subscribe('a', () => {});
  const tracked = client.track('a', { n: 1 });
  let ws = await connected(0);
  reply(ws, 'track', { type: 'tracked' });
  reply(ws, 'subscribe', { type: 'subscribed', epoch: 'e', offset: '0', recovered: false });
  await tracked;
  const asked = outcome(client.presence('a'));
  client.close();
  assert.deepEqual(await asked, { code: 'closed' });
  client.connect();
  ws = await connected(1);
  assert.deepEqual(ws.sentOfType('subscribe').map((f) => f.channel), ['a']);
  assert.deepEqual(ws.sentOfType('track').map((f) => f.channel), ['a']);
});
