// Type declarations for `pgcast-client/react` (needs React's types: @types/react).
import type { Context, ReactElement, ReactNode } from 'react';

import type { ConnectionState, MessageInfo, PgcastClient, SubscribedInfo } from './client.js';

/** The client the hooks use; provide it with PgcastProvider (null: hooks do nothing). */
export declare const PgcastContext: Context<PgcastClient | null>;

export declare function PgcastProvider(props: {
  client: PgcastClient | null;
  children?: ReactNode;
}): ReactElement;

export interface ChannelOptions {
  /** History could not cover a disconnect: refetch your state. */
  onRecoveryFailed?: (info: SubscribedInfo) => void;
}

/**
 * Subscribed to `channel` while mounted; always calls the latest `onMessage` without
 * resubscribing. A falsy channel subscribes to nothing.
 */
export declare function useChannel<T = unknown>(
  channel: string | null | undefined | false,
  onMessage: (data: T, info: MessageInfo) => void,
  options?: ChannelOptions,
): void;

/** The client's connection state; 'idle' without a client. */
export declare function useConnectionState(): ConnectionState;
