// The React hook (`pgcast-client/react`, clients/js/src/react.js) on the real client, with
// fake sockets and a minimal React: subscribe while mounted, follow the channel, latest
// handler, cleanup.
import assert from 'node:assert/strict';
import { register } from 'node:module';
import { test } from 'node:test';

import { PgcastClient } from '../../clients/js/src/client.js';
import { FakeWebSocket, waitFor } from './fakes.mjs';

register('./react-loader.mjs', import.meta.url);
const { render } = await import('react');
const { PgcastContext, useChannel, useConnectionState } = await import('../../clients/js/src/react.js');

test('useChannel subscribes while mounted, follows the channel, calls the latest handler', async () => {
  FakeWebSocket.reset();
  const client = new PgcastClient({ url: 'http://gw.test', token: 't', WebSocket: FakeWebSocket });
  const got = [];
  function Component({ channel, tag }) {
    useChannel(channel, (data) => got.push(`${tag}:${data}`));
    return useConnectionState();
  }
  const view = render(Component, { channel: 'a', tag: 'v1' }, { context: [[PgcastContext, client]] });
  const ws = await waitFor(() => FakeWebSocket.last(), 'a socket');
  ws.open();
  assert.deepEqual(ws.sentOfType('subscribe').map((f) => f.channel), ['a']);
  ws.receive({ type: 'subscribed', id: 1, channel: 'a', epoch: 'e', offset: '0', recovered: false });
  view.rerender({ channel: 'a', tag: 'v2' }); // new handler, same channel: no resubscribe
  ws.receive({ type: 'message', channel: 'a', offset: '1', data: 'x' });
  assert.deepEqual(got, ['v2:x']);
  assert.equal(ws.sentOfType('subscribe').length, 1);
  assert.ok(view.instance.renders > 0, 'useConnectionState saw the state change');

  view.rerender({ channel: 'b', tag: 'v3' });
  assert.deepEqual(ws.sentOfType('unsubscribe').map((f) => f.channel), ['a']);
  assert.deepEqual(ws.sentOfType('subscribe').map((f) => f.channel), ['a', 'b']);
  view.unmount();
  assert.deepEqual(ws.sentOfType('unsubscribe').map((f) => f.channel), ['a', 'b']);
  client.close();
});

test('a falsy channel subscribes to nothing', async () => {
  FakeWebSocket.reset();
  const client = new PgcastClient({ url: 'http://gw.test', token: 't', WebSocket: FakeWebSocket });
  function Component({ channel }) {
    useChannel(channel, () => {});
    return null;
  }
  const view = render(Component, { channel: '' }, { context: [[PgcastContext, client]] });
  const ws = await waitFor(() => FakeWebSocket.last(), 'a socket');
  ws.open();
  assert.equal(ws.sentOfType('subscribe').length, 0);
  view.unmount();
  client.close();
});
