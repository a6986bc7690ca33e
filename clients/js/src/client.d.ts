// Type declarations for the pgcast browser client: the npm package `pgcast-client`, also
// served by the gateway as /client.js (+ /static/client.d.ts, copies made by `make client-js`).
//
//   import { PgcastClient } from 'pgcast-client';   // or 'https://rt.example.com/client.js'
//   const pg = new PgcastClient({ token: () => fetch('/api/pgcast-token').then((r) => r.text()) });
//   pg.subscribe<ArticleEvent>('articles', (event) => refresh(event.id));
//   pg.track('doc:7', { name: 'Ada' });                       // presence, re-tracked on reconnect
//   pg.subscribe('doc:7', { onPresence: (members) => show(members), onBroadcast: (d, { from }) => ... });
//   await pg.publish('doc:7', { typing: true });               // needs the token's `publish` claim

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
  /**
   * The gateway's error code (forbidden, bad_request, too_many_subscriptions, too_large,
   * rate_limited, presence_full, ...) or, for presence()/publish()/track(), the client's own:
   * timeout, disconnected (a publish whose connection died unanswered), closed, cancelled
   * (a track() overtaken by untrack()), unsupported (over SSE).
   */
  code?: string;
  frame?: unknown;
}

/** One connection's presence in a channel (a user with two tabs is two members). */
export interface Member<M = Record<string, unknown>> {
  /** The user (the token's `sub`). */
  sub: string;
  /** The connection: the member's identity in the set. */
  conn: string;
  meta: M;
}

export interface PresenceInfo {
  channel: string;
  /** true: from a snapshot replacing the set (after subscribing, after a reconnect, or a resync). */
  sync: boolean;
}

export interface JoinInfo extends PresenceInfo {
  /** The connection was already a member: its meta changed. */
  update: boolean;
}

export interface BroadcastInfo {
  channel: string;
  /** The sender's `sub`. */
  from: string;
}

export interface UnsubscribedInfo {
  channel: string;
  /** Why the server ended the subscription ('revoked': permission withdrawn). */
  reason: string;
}

export interface ClosedInfo {
  /** 4003: the application disconnected this user; 4001: token refused, no token callback. */
  code: number;
  /** For 4003, the application's reason text (pgcast.disconnect(sub, reason)). */
  reason: string;
}

export interface SubscriptionHandlers<T = unknown> {
  /** Each message exactly once, in offset order (duplicates across reconnects are dropped). */
  onMessage?: (data: T, info: MessageInfo) => void;
  onSubscribed?: (info: SubscribedInfo) => void;
  /** Continuity was lost (history trimmed or expired, Redis restarted): refetch your state. */
  onRecoveryFailed?: (info: SubscribedInfo) => void;
  /** The gateway refused the subscription; it is dropped (subscribe again to retry). */
  onError?: (error: PgcastError) => void;
  /** A client message another connection sent with publish() (never replayed). */
  onBroadcast?: (data: unknown, info: BroadcastInfo) => void;
  /** The server ended the subscription for good (e.g. revoked); it is not resubscribed. */
  onUnsubscribed?: (info: UnsubscribedInfo) => void;
  /** Receive the channel's presence (implied by any of the three handlers below). */
  presence?: boolean;
  /** The whole member set, after every change (a snapshot or a join/leave). */
  onPresence?: (members: Member[], info: PresenceInfo) => void;
  /** A member joined (or, `info.update`, changed its meta); also for each new one in a snapshot. */
  onJoin?: (member: Member, info: JoinInfo) => void;
  /** A member left; also for each one a snapshot no longer has. */
  onLeave?: (member: Member, info: PresenceInfo) => void;
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
  /** The server ended the client for good (4003, or 4001 without a token callback). */
  onClosed?: (info: ClosedInfo) => void;
  /** ms a presence()/publish()/untrack() waits for its answer, time queued included (10 s). */
  requestTimeout?: number;
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
  /** pending | subscribing | active | failed | closed | revoked */
  readonly state: string;
  readonly position: ChannelPosition;
  /** Whether the subscription receives presence. */
  readonly presence: boolean;
  /** The current member set (presence subscriptions). */
  readonly members: Member[];
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
  on(type: 'closed', listener: (info: ClosedInfo) => void): () => void;
  on(type: 'unsubscribed', listener: (info: UnsubscribedInfo) => void): () => void;
  /** Subscribe; survives reconnects; `position` resumes from a persisted position. */
  subscribe<T = unknown>(
    channel: string,
    handlers: SubscriptionHandlers<T> | ((data: T, info: MessageInfo) => void),
    position?: Partial<ChannelPosition>,
  ): Subscription<T>;
  /**
   * Join (or update) this connection's presence in `channel`; remembered and sent again on
   * every new connection until untrack(). Resolves when the gateway confirmed.
   */
  track(channel: string, meta?: Record<string, unknown>): Promise<void>;
  /** Leave `channel`'s presence; no longer tracked on reconnects. */
  untrack(channel: string): Promise<void>;
  /** The members of `channel`'s presence now. */
  presence(channel: string): Promise<Member[]>;
  /**
   * Send an ephemeral client message to every other connection subscribed to `channel`
   * (`onBroadcast`); needs the token's `publish` claim. Resolves once accepted.
   */
  publish(channel: string, data: unknown): Promise<void>;
  connect(): void;
  /** No more reconnects; subscriptions (and tracks) are kept for a later connect(). */
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
  outcome: { code: number; planned?: boolean; reason?: string },
  context: {
    attempt: number;
    canRefetchToken: boolean;
    options: Required<Pick<ClientOptions, 'backoffBase' | 'backoffCap' | 'restartJitter'>>;
    random: () => number;
  },
): ReconnectPlan;
