// usePresence and useBroadcast (`pgcast-client/react`) on the real client, with fake sockets
// and a minimal React: track while mounted, meta updates, the live member list, one shared
// subscription per channel, send() and received client messages.
import assert from 'node:assert/strict';
import { register } from 'node:module';
import { test } from 'node:test';

import { PgcastClient } from '../../clients/js/src/client.js';
import { FakeWebSocket, waitFor } from './fakes.mjs';

register('./react-loader.mjs', import.meta.url);
const { render } = await import('react');
const { PgcastContext, useBroadcast, useChannel, usePresence } = await import('../../clients/js/src/react.js');

async function setup() {
  FakeWebSocket.reset();
  const client = new PgcastClient({ url: 'http://gw.test', token: 't', WebSocket: FakeWebSocket });
  const ws = await waitFor(() => FakeWebSocket.last(), 'a socket');
  ws.open();
  return { client, ws, context: [[PgcastContext, client]] };
}

test('usePresence tracks while mounted, returns the live members, updates meta, untracks', async () => {
  const { client, ws, context } = await setup();
  function Viewers({ name, typing }) {
    return usePresence('room', { name, typing });
  }
  const view = render(Viewers, { name: 'Ada', typing: false }, { context });
  const subscribe = ws.sentOfType('subscribe')[0];
  assert.deepEqual([subscribe.channel, subscribe.presence], ['room', true]);
  assert.deepEqual(ws.sentOfType('track').map((f) => f.meta), [{ name: 'Ada', typing: false }]);
  ws.receive({ type: 'subscribed', id: subscribe.id, channel: 'room', epoch: 'e', offset: '0', recovered: false });
  const ada = { sub: 'u1', conn: 'c1', meta: { name: 'Ada', typing: false } };
  ws.receive({ type: 'presence', channel: 'room', members: [ada] });
  assert.deepEqual(view.rerender({ name: 'Ada', typing: false }), [ada]);
  ws.receive({ type: 'join', channel: 'room', member: { sub: 'u2', conn: 'c2', meta: { name: 'Bob' } } });
  assert.deepEqual(view.rerender({ name: 'Ada', typing: true }).map((m) => m.sub), ['u1', 'u2']);
  assert.deepEqual(ws.sentOfType('track').map((f) => f.meta.typing), [false, true], 'a new meta is a track');
  assert.equal(ws.sentOfType('untrack').length, 0, 'no untrack on a meta update');
  ws.receive({ type: 'tracked', id: ws.sentOfType('track').at(-1).id, channel: 'room' });
  view.unmount();
  assert.deepEqual(ws.sentOfType('untrack').map((f) => f.channel), ['room']);
  assert.deepEqual(ws.sentOfType('unsubscribe').map((f) => f.channel), ['room']);
  client.close();
});

test('usePresence without meta only watches', async () => {
  const { client, ws, context } = await setup();
  const view = render(() => usePresence('room'), {}, { context });
  assert.equal(ws.sentOfType('subscribe').length, 1);
  assert.equal(ws.sentOfType('track').length, 0);
  view.unmount();
  assert.equal(ws.sentOfType('untrack').length, 0);
  client.close();
});

test('useChannel and usePresence on one channel share a subscription, upgraded to presence with resume', async () => {
  const { client, ws, context } = await setup();
  const got = [];
  const feed = render(() => useChannel('doc', (data) => got.push(data)), {}, { context });
  const first = ws.sentOfType('subscribe')[0];
  assert.equal(first.presence, undefined);
  ws.receive({ type: 'subscribed', id: first.id, channel: 'doc', epoch: 'e', offset: '4', recovered: false });
  ws.receive({ type: 'message', channel: 'doc', offset: '5', data: 'a' });
  const viewers = render(() => usePresence('doc'), {}, { context });
  assert.deepEqual(ws.sentOfType('unsubscribe').map((f) => f.channel), ['doc']);
  const second = ws.sentOfType('subscribe')[1];
  assert.deepEqual([second.presence, second.since, second.epoch], [true, '5', 'e']);
  ws.receive({ type: 'subscribed', id: second.id, channel: 'doc', epoch: 'e', offset: '6', recovered: true, replayed: 1 });
  ws.receive({ type: 'message', channel: 'doc', offset: '6', data: 'b' });
  assert.deepEqual(got, ['a', 'b'], 'both hooks on one subscription, nothing lost');
  viewers.unmount();
  assert.equal(ws.sentOfType('unsubscribe').length, 1, 'still followed by useChannel');
  feed.unmount();
  assert.equal(ws.sentOfType('unsubscribe').length, 2);
  client.close();
});

test('useBroadcast: send() publishes and resolves; onMessage gets the others’ messages', async () => {
  const { client, ws, context } = await setup();
  const got = [];
  let send;
  const view = render(
    () => {
      send = useBroadcast('room', (data, info) => got.push([data, info.from]));
    },
    {},
    { context },
  );
  const sent = send({ typing: true });
  const request = ws.sentOfType('publish')[0];
  assert.deepEqual([request.channel, request.data], ['room', { typing: true }]);
  ws.receive({ type: 'published', id: request.id, channel: 'room' });
  await sent;
  const subscribe = ws.sentOfType('subscribe')[0];
  ws.receive({ type: 'subscribed', id: subscribe.id, channel: 'room', epoch: 'e', offset: '0', recovered: false });
  ws.receive({ type: 'broadcast', channel: 'room', from: 'u2', data: { typing: true } });
  assert.deepEqual(got, [[{ typing: true }, 'u2']]);
  const refused = send('x').catch((err) => err.code);
  ws.receive({ type: 'error', id: ws.sentOfType('publish')[1].id, code: 'forbidden', message: 'no publish claim' });
  assert.equal(await refused, 'forbidden');
  view.unmount();
  client.close();
});
