// Node Socket.IO peer server: socket.io + @socket.io/redis-adapter, JWT-checked rooms.
// `node server.js PORT REDIS_URL SECRET`. Same rules as pgcast: HS256 token in the
// Authorization header (sub and exp required), `subscribe` to user:<sub> or a
// channel matching the token's `channels` globs; the ack answers {ok}.
"use strict";
const crypto = require("node:crypto");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

const [port, redisUrl, secret] = process.argv.slice(2);

function verify(token) {
  const [head, body, sig] = (token || "").split(".");
  if (!sig) throw new Error("malformed");
  const expected = crypto.createHmac("sha256", secret).update(`${head}.${body}`).digest();
  const given = Buffer.from(sig, "base64url");
  if (given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) {
    throw new Error("bad signature");
  }
  const claims = JSON.parse(Buffer.from(body, "base64url").toString());
  if (claims.sub === undefined || !(claims.exp > Date.now() / 1000)) throw new Error("expired");
  return claims;
}

function globToRegExp(pattern) {
  const escaped = pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  return new RegExp(`^${escaped.replace(/\*/g, ".*").replace(/\?/g, ".")}$`, "s");
}

function allowed(claims, channel) {
  if (channel === `user:${claims.sub}`) return true;
  return (claims.channels || []).some((p) => globToRegExp(p).test(channel));
}

async function main() {
  const pub = createClient({ url: redisUrl });
  const sub = pub.duplicate();
  await Promise.all([pub.connect(), sub.connect()]);
  const io = new Server({ transports: ["websocket"], serveClient: false });
  io.adapter(createAdapter(pub, sub));
  io.use((socket, next) => {
    try {
      const header = socket.handshake.headers.authorization || "";
      socket.data.claims = verify(header.replace(/^Bearer /, ""));
      next();
    } catch (err) {
      next(new Error("unauthorized"));
    }
  });
  io.on("connection", (socket) => {
    socket.on("subscribe", (channel, ack) => {
      const ok = typeof channel === "string" && allowed(socket.data.claims, channel);
      if (ok) socket.join(channel);
      if (typeof ack === "function") ack({ ok });
    });
  });
  io.listen(Number(port));
  process.stdout.write("ready\n");
  const stop = () => io.close(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
