'use client';
// React bindings for the pgcast browser client (`pgcast-client/react`): no build step, no
// dependency but React (an optional peer dependency of the package).
//
//   const client = new PgcastClient({ url, token: fetchToken });
//   <PgcastProvider client={client}><LiveSearch /></PgcastProvider>
//   useChannel('articles', (event) => ...);            // subscribed while mounted
//   const members = usePresence('doc:7', { name });   // tracked while mounted, live member list
//   const send = useBroadcast('doc:7', (data, { from }) => ...);   // send(data): a client message
//
// Hooks on the same channel share one subscription (a client holds one per channel); it
// follows `channel` (a new channel unsubscribes the old one) and always calls the latest
// handlers without resubscribing on every render.
import { createContext, createElement, useCallback, useContext, useEffect, useRef, useState } from 'react';

export const PgcastContext = createContext(null);

export function PgcastProvider({ client, children }) {
  return createElement(PgcastContext.Provider, { value: client }, children);
}

// client -> channel -> { sub, listeners, presence }: one subscription per channel, fanned out.
const shared = new WeakMap();

function fanOut(entry, name) {
  return (...args) => {
    for (const listener of [...entry.listeners]) listener.handlers()[name]?.(...args);
  };
}

function open(client, channel, entry) {
  // Presence is asked for at subscribe time: a subscription without it is replaced by one
  // with it, resuming from its position (nothing lost, nothing twice).
  const position = entry.sub ? entry.sub.position : undefined;
  if (entry.sub) entry.sub.unsubscribe();
  entry.presence = entry.presence || [...entry.listeners].some((l) => l.presence);
  const handlers = {
    onMessage: fanOut(entry, 'onMessage'),
    onRecoveryFailed: fanOut(entry, 'onRecoveryFailed'),
    onBroadcast: fanOut(entry, 'onBroadcast'),
    onUnsubscribed: fanOut(entry, 'onUnsubscribed'),
    presence: entry.presence,
  };
  if (entry.presence) handlers.onPresence = fanOut(entry, 'onPresence');
  entry.sub = client.subscribe(channel, handlers, position);
}

/** Add a hook's listener to the channel's shared subscription; returns the detach function. */
function attach(client, channel, listener) {
  let channels = shared.get(client);
  if (!channels) shared.set(client, (channels = new Map()));
  let entry = channels.get(channel);
  if (!entry) channels.set(channel, (entry = { sub: null, listeners: new Set(), presence: false }));
  entry.listeners.add(listener);
  if (!entry.sub || (listener.presence && !entry.presence)) open(client, channel, entry);
  else if (listener.presence) listener.handlers().onPresence?.(entry.sub.members, { channel, sync: true });
  return () => {
    entry.listeners.delete(listener);
    if (entry.listeners.size > 0 || channels.get(channel) !== entry) return;
    channels.delete(channel);
    entry.sub.unsubscribe();
  };
}

function quiet(err) {
  // cancelled: untracked before confirmed; closed: the client stopped (its 'state' says why).
  if (err?.code !== 'cancelled' && err?.code !== 'closed') console.warn('pgcast:', err);
}

/**
 * Subscribe to `channel` while the component is mounted; `onMessage(data, info)` per message.
 * `options.onRecoveryFailed(info)`: history could not cover a disconnect; refetch your state.
 * `options.onBroadcast(data, {from})`, `options.onPresence(members)` and
 * `options.onUnsubscribed({reason})` as in `client.subscribe`.
 * A falsy `channel` subscribes to nothing (e.g. while a query is empty).
 */
export function useChannel(channel, onMessage, options = {}) {
  const client = useContext(PgcastContext);
  const handlers = useRef(null);
  handlers.current = { ...options, onMessage };
  const presence = typeof options.onPresence === 'function';
  useEffect(() => {
    if (!client || !channel) return undefined;
    return attach(client, channel, { presence, handlers: () => handlers.current });
  }, [client, channel, presence]);
}

/**
 * The members of `channel`'s presence (`[{sub, conn, meta}]`), kept current while mounted.
 * With `meta`, this component's connection is also tracked in it (updated when `meta`
 * changes by value, untracked on unmount); without, it only watches.
 */
export function usePresence(channel, meta) {
  const client = useContext(PgcastContext);
  const [members, setMembers] = useState([]);
  useEffect(() => {
    if (!client || !channel) return undefined;
    return attach(client, channel, { presence: true, handlers: () => ({ onPresence: setMembers }) });
  }, [client, channel]);
  const metaKey = meta === undefined || meta === null ? null : JSON.stringify(meta);
  const tracking = metaKey !== null;
  useEffect(() => {
    // Leaves when the channel changes or on unmount; a new meta is a track() (an update).
    if (!client || !channel || !tracking) return undefined;
    return () => {
      client.untrack(channel).catch(quiet);
    };
  }, [client, channel, tracking]);
  useEffect(() => {
    if (client && channel && metaKey !== null) client.track(channel, JSON.parse(metaKey)).catch(quiet);
  }, [client, channel, metaKey]);
  return members;
}

/**
 * Client messages on `channel`: returns `send(data)` (a promise, rejected with the gateway's
 * code: forbidden without the token's `publish` claim, rate_limited, too_large); with
 * `onMessage(data, {channel, from})`, also receives the other connections' messages.
 */
export function useBroadcast(channel, onMessage) {
  const client = useContext(PgcastContext);
  const handler = useRef(onMessage);
  handler.current = onMessage;
  const listening = typeof onMessage === 'function';
  useEffect(() => {
    if (!client || !channel || !listening) return undefined;
    const onBroadcast = (data, info) => handler.current?.(data, info);
    return attach(client, channel, { presence: false, handlers: () => ({ onBroadcast }) });
  }, [client, channel, listening]);
  return useCallback(
    (data) => (client && channel ? client.publish(channel, data) : Promise.reject(new Error('pgcast: no client or channel'))),
    [client, channel],
  );
}

/** The client's connection state ('connecting', 'connected', 'disconnected', 'closed'). */
export function useConnectionState() {
  const client = useContext(PgcastContext);
  const [state, setState] = useState(client ? client.state : 'idle');
  useEffect(() => (client ? client.on('state', (change) => setState(change.state)) : undefined), [client]);
  return state;
}
