// Type declarations for `pgcast-client/react` (needs React's types: @types/react).
import type { Context, ReactElement, ReactNode } from 'react';

import type {
  BroadcastInfo,
  ConnectionState,
  Member,
  MessageInfo,
  PgcastClient,
  PresenceInfo,
  SubscribedInfo,
  UnsubscribedInfo,
} from './client.js';

/** The client the hooks use; provide it with PgcastProvider (null: hooks do nothing). */
export declare const PgcastContext: Context<PgcastClient | null>;

export declare function PgcastProvider(props: {
  client: PgcastClient | null;
  children?: ReactNode;
}): ReactElement;

export interface ChannelOptions {
  /** History could not cover a disconnect: refetch your state. */
  onRecoveryFailed?: (info: SubscribedInfo) => void;
  /** Client messages other connections publish() on the channel. */
  onBroadcast?: (data: unknown, info: BroadcastInfo) => void;
  /** The channel's member set after each change (subscribes with presence). */
  onPresence?: (members: Member[], info: PresenceInfo) => void;
  /** The server ended the subscription (e.g. 'revoked'). */
  onUnsubscribed?: (info: UnsubscribedInfo) => void;
}

/**
 * Subscribed to `channel` while mounted; always calls the latest `onMessage` without
 * resubscribing. A falsy channel subscribes to nothing. Hooks on one channel share one
 * subscription.
 */
export declare function useChannel<T = unknown>(
  channel: string | null | undefined | false,
  onMessage: (data: T, info: MessageInfo) => void,
  options?: ChannelOptions,
): void;

/**
 * The channel's presence members, current while mounted. With `meta`, this connection is
 * tracked in the channel (meta updated when it changes by value; untracked on unmount).
 */
export declare function usePresence<M = Record<string, unknown>>(
  channel: string | null | undefined | false,
  meta?: M | null,
): Member<M>[];

/**
 * `send(data)` publishes a client message on `channel` (needs the token's `publish`
 * claim); with `onMessage`, the other connections' messages arrive there too.
 */
export declare function useBroadcast<T = unknown>(
  channel: string | null | undefined | false,
  onMessage?: (data: T, info: BroadcastInfo) => void,
): (data: T) => Promise<void>;

/** The client's connection state; 'idle' without a client. */
export declare function useConnectionState(): ConnectionState;
