-- pgcast control script: fence, de-duplicate, store and broadcast ONE server-side control
-- (an outbox row of channel '[control]': pgcast.disconnect / pgcast.unsubscribe).
-- The layout is pgcast/keys.py's: a stream entry whose id Redis assigns (so the stream is in
-- publish order, whatever order the transactions committed in) with field 'f' = the control
-- JSON, the outbox id remembered in the ids zset, and the live payload
-- pgcast.keys.encode_control(stream id, json) = '<stream id>:<json>'.
-- Runs in the publisher's pipeline between the publish script's calls, in outbox-id order,
-- so a gateway hears the events its transaction published before it first.
--
-- KEYS[1] the fence copy of the control slot   KEYS[2] the control stream   KEYS[3] the control
--   ids zset (score = outbox id, member = its text): pgcast:fence, pgcast:control,
--   pgcast:control:ids with one Redis; pgcast:{control}:fence, pgcast:{control}:stream,
--   pgcast:{control}:ids on Redis Cluster (one slot; pgcast.keys.Layout)
-- ARGV[1] leader epoch (integer)   ARGV[2] outbox id (decimal, no sign, no leading zero; a
--   control decoded from the WAL is an outbox row too)
-- ARGV[3] the control JSON (checked by the listener)
-- ARGV[4] stream max length (approximate), also how many recent outbox ids the zset keeps
-- ARGV[5] the live pub/sub channel (pgcast:control:live; pgcast:{control}:live on a cluster)
-- ARGV[6] the publish command: 'PUBLISH' (one Redis) or 'SPUBLISH' (Redis Cluster)
-- Returns 'p' (published), 'd' (duplicate: this outbox id was already published, a retried
-- batch) or 'fenced' (a newer leader raised the fence: nothing written).

local leader = tonumber(ARGV[1])
local fence = tonumber(redis.call('GET', KEYS[1]) or '0')
if leader < fence then
  return 'fenced'
end
if leader > fence then
  redis.call('SET', KEYS[1], ARGV[1])
end

if redis.call('ZSCORE', KEYS[3], ARGV[2]) then
  return 'd'
end
local entry = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'f', ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[2])
-- Keep the newest ARGV[4] ids: as many as the stream keeps, far more than any retried batch.
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[4]) + 1))
redis.call(ARGV[6] == 'SPUBLISH' and 'SPUBLISH' or 'PUBLISH', ARGV[5], entry .. ':' .. ARGV[3])
return 'p'
