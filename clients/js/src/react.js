'use client';
// React bindings for the pgcast browser client (`pgcast-client/react`): no build step, no
// dependency but React (an optional peer dependency of the package).
//
//   const client = new PgcastClient({ url, token: fetchToken });
//   <PgcastProvider client={client}><LiveSearch /></PgcastProvider>
//   useChannel('articles', (event) => ...);   // subscribed while mounted
//
// The subscription follows `channel` (a new channel unsubscribes the old one) and always
// calls the latest `onMessage` without resubscribing on every render.
import { createContext, createElement, useContext, useEffect, useRef, useState } from 'react';

export const PgcastContext = createContext(null);

export function PgcastProvider({ client, children }) {
  return createElement(PgcastContext.Provider, { value: client }, children);
}

/**
 * Subscribe to `channel` while the component is mounted; `onMessage(data, info)` per message.
 * `options.onRecoveryFailed(info)`: history could not cover a disconnect; refetch your state.
 * A falsy `channel` subscribes to nothing (e.g. while a query is empty).
 */
export function useChannel(channel, onMessage, options = {}) {
  const client = useContext(PgcastContext);
  const handlers = useRef(null);
  handlers.current = { onMessage, onRecoveryFailed: options.onRecoveryFailed };
  useEffect(() => {
    if (!client || !channel) return undefined;
    const subscription = client.subscribe(channel, {
      onMessage: (data, info) => handlers.current.onMessage?.(data, info),
      onRecoveryFailed: (info) => handlers.current.onRecoveryFailed?.(info),
    });
    return () => subscription.unsubscribe();
  }, [client, channel]);
}

/** The client's connection state ('connecting', 'connected', 'disconnected', 'closed'). */
export function useConnectionState() {
  const client = useContext(PgcastContext);
  const [state, setState] = useState(client ? client.state : 'idle');
  useEffect(() => (client ? client.on('state', (change) => setState(change.state)) : undefined), [client]);
  return state;
}
