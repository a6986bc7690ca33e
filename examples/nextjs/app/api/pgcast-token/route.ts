// A short-lived pgcast connection token for the logged-in user (HS256 with the gateways'
// PGCAST_JWT_SECRET). The client calls this again on every reconnect and before expiry,
// so a short lifetime costs nothing and bounds what a leaked token is worth.
import { signHs256 } from '../../../lib/jwt';
import { currentUser } from '../../../lib/session';

export const dynamic = 'force-dynamic'; // per user, never cached

const TTL_SECONDS = 300;
// What this user may subscribe to (names or patterns); `user:<sub>` is always allowed.
const CHANNELS = ['articles'];

export async function POST(): Promise<Response> {
  const secret = process.env.PGCAST_JWT_SECRET;
  if (!secret) return new Response('PGCAST_JWT_SECRET is not set', { status: 500 });
  const user = await currentUser();
  if (!user) return new Response('not logged in', { status: 401 });
  const now = Math.floor(Date.now() / 1000);
  const claims: Record<string, unknown> = { sub: user.id, iat: now, exp: now + TTL_SECONDS, channels: CHANNELS };
  if (process.env.PGCAST_JWT_AUDIENCE) claims.aud = process.env.PGCAST_JWT_AUDIENCE;
  if (process.env.PGCAST_JWT_ISSUER) claims.iss = process.env.PGCAST_JWT_ISSUER;
  const token = await signHs256(claims, secret);
  return new Response(token, {
    headers: { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' },
  });
}
