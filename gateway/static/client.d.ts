// Type declarations for the pgcast browser client: the npm package `pgcast-client`, also
// served by the gateway as /client.js (+ /static/client.d.ts, copies made by `make client-js`).
//
//   import { PgcastClient } from 'pgcast-client';   // or 'https://rt.example.com/client.js'
//   const pg = new PgcastClient({ token: () => fetch('/api/pgcast-token').then((r) => r.text()) });
//   pg.subscribe<ArticleEvent>('articles', (event) => refresh(event.id));

/** A token, or a function giving one (called on every (re)connect and before expiry). */
export type TokenSource = string | (() => string | Promise<string>);

export type ConnectionState = 'idle' | 'connecting' | 'connected' | 'disconnected' | 'closed';

export type Transport = 'websocket' | 'sse';

export interface StateChange {
  state: ConnectionState;
  previous: ConnectionState;
  /** Close code of the connection that ended (0: none, e.g. refused or network error). */
  code?: number;
  reason?: string;
  /** ms until the next attempt ('disconnected' only). */
  delay?: number;
  /** Consecutive failed attempts so far ('connecting' only). */
  attempt?: number;
  transport?: Transport;
  /** ms the handshake took ('connected' over WebSocket only). */
  took?: number;
}

/** Where a channel stands: persist it to resume after a page reload. */
export interface ChannelPosition {
  epoch: string | null;
  offset: string | null;
}

export interface SubscribedInfo {
  channel: string;
  epoch: string;
  /** The channel's latest offset when the subscription was (re)established. */
  offset: string;
  /** false after a resume: history could not cover the gap; refetch your state. */
  recovered: boolean;
  /** Messages replayed from history on a resume, delivered before any live one. */
  replayed: number;
}

export interface MessageInfo {
  channel: string;
  /** Opaque, increasing within a channel and epoch. */
  offset: string;
  epoch: string | null;
}

export interface PgcastError extends Error {
  /** The gateway's error code: forbidden, bad_request, too_many_subscriptions, ... */
  code?: string;
  frame?: unknown;
}

export interface SubscriptionHandlers<T = unknown> {
  /** Each message exactly once, in offset order (duplicates across reconnects are dropped). */
  onMessage?: (data: T, info: MessageInfo) => void;
  onSubscribed?: (info: SubscribedInfo) => void;
  /** Continuity was lost (history trimmed or expired, Redis restarted): refetch your state. */
  onRecoveryFailed?: (info: SubscribedInfo) => void;
  /** The gateway refused the subscription; it is dropped (subscribe again to retry). */
  onError?: (error: PgcastError) => void;
}

export interface ClientOptions {
  /**
   * Gateway base URL (http(s) or ws(s)). Default: where client.js was loaded from, which is
   * right for /client.js from the gateway; set it when the client comes bundled from npm.
   */
  url?: string;
  token: TokenSource;
  /** 'auto' (default): WebSocket, SSE when WebSocket never gets through. */
  transport?: 'auto' | 'websocket' | 'sse';
  /** false: call connect() yourself. */
  autoConnect?: boolean;
  onStateChange?: (change: StateChange) => void;
  onRecoveryFailed?: (info: SubscribedInfo) => void;
  /** ms; full-jitter exponential backoff between failed attempts. */
  backoffBase?: number;
  backoffCap?: number;
  /** ms a connection must live before the backoff resets. */
  healthyAfter?: number;
  /** ms; spread of the prompt reconnect after 1012 (gateway draining). */
  restartJitter?: number;
  connectTimeout?: number;
  /** ms between pings; no frame for pingInterval + pongTimeout means a dead connection. */
  pingInterval?: number;
  pongTimeout?: number;
  /** ms before the token's exp at which the token function is asked again. */
  refreshMargin?: number;
  /** WebSocket attempts that never opened before SSE is tried ('auto'). */
  wsFailuresBeforeSse?: number;
  /** For tests and non-browser runtimes. */
  WebSocket?: typeof WebSocket;
  EventSource?: typeof EventSource;
  random?: () => number;
}

export declare class Subscription<T = unknown> {
  readonly channel: string;
  /** pending | subscribing | active | failed | closed */
  readonly state: string;
  readonly position: ChannelPosition;
  unsubscribe(): void;
}

export declare class PgcastClient {
  constructor(options: ClientOptions);
  readonly state: ConnectionState;
  /** The transport of the current connection, null while not connected. */
  readonly transport: Transport | null;
  readonly endpoints: { ws: string; sse: string };
  on(type: 'state', listener: (change: StateChange) => void): () => void;
  on(type: 'recoveryFailed', listener: (info: SubscribedInfo) => void): () => void;
  on(type: 'error', listener: (error: PgcastError) => void): () => void;
  /** Subscribe; survives reconnects; `position` resumes from a persisted position. */
  subscribe<T = unknown>(
    channel: string,
    handlers: SubscriptionHandlers<T> | ((data: T, info: MessageInfo) => void),
    position?: Partial<ChannelPosition>,
  ): Subscription<T>;
  connect(): void;
  /** No more reconnects; subscriptions are kept for a later connect(). */
  close(): void;
  /** Skip the current backoff wait. */
  reconnectNow(): void;
}

export declare function connect(options: ClientOptions): PgcastClient;

export declare const CLOSE_CODES: Readonly<Record<number, { name: string; advice: string }>>;
export declare const STATES: readonly ConnectionState[];

export declare function backoffDelay(
  attempt: number,
  base: number,
  cap: number,
  random?: () => number,
): number;
export declare function tokenExpiry(token: string): number | null;
export declare function refreshDelay(token: string, now: number, margin: number): number | null;
export declare function compareOffsets(a: string, b: string): number;
export declare function endpoints(base: string): { ws: string; sse: string };

/** A channel's resume position and the last delivered offset (de-duplication). */
export declare class Position {
  constructor(epoch?: string | null, offset?: string | null);
  epoch: string | null;
  offset: string | null;
  delivered: string | null;
  resumeFields(): { since: string; epoch: string } | Record<string, never>;
  subscribed(
    frame: { epoch: string; offset: string; recovered?: boolean },
    resumed: boolean,
    active: boolean,
  ): boolean;
  accept(offset: string): boolean;
}

export interface ReconnectPlan {
  stop: boolean;
  /** ms to wait before the next attempt. */
  delay: number;
  reason?: string;
}

/** What to do after a connection ended (the client's reconnect policy, exported for tests). */
export declare function reconnectPlan(
  outcome: { code: number; planned?: boolean },
  context: {
    attempt: number;
    canRefetchToken: boolean;
    options: Required<Pick<ClientOptions, 'backoffBase' | 'backoffCap' | 'restartJitter'>>;
    random: () => number;
  },
): ReconnectPlan;
