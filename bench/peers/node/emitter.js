// Node Socket.IO peer's listener: the classic LISTEN/NOTIFY bridge through
// @socket.io/redis-emitter. `node emitter.js DSN REDIS_URL`. One pg connection
// LISTENs on bench_classic ({"channel","data"} from a per-row pg_notify trigger)
// and emits each event to the room `channel`. Prints "ready" once listening.
"use strict";
const { Client } = require("pg");
const { Emitter } = require("@socket.io/redis-emitter");
const { createClient } = require("redis");

const [dsn, redisUrl] = process.argv.slice(2);

async function main() {
  const redis = createClient({ url: redisUrl });
  await redis.connect();
  const emitter = new Emitter(redis);
  const pg = new Client({ connectionString: dsn });
  await pg.connect();
  pg.on("notification", (msg) => {
    const event = JSON.parse(msg.payload);
    emitter.to(event.channel).emit("message", event.data);
  });
  await pg.query("LISTEN bench_classic");
  process.stdout.write("ready\n");
  const stop = () => Promise.allSettled([pg.end(), redis.quit()]).then(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
