-- pgcast publish script: fence, de-duplicate, number, store and broadcast ONE event.
-- The layout is pgcast/keys.py's; the frame built here must equal
-- pgcast.keys.message_frame(channel, offset, data_json) byte for byte.
--
-- KEYS[1] meta hash   KEYS[2] history stream   KEYS[3] ids zset   (one channel, one hash tag)
-- KEYS[4] the global fence key (pgcast:fence). Because that key is global, this script
--   runs on a single Redis (or a primary with replicas). On Redis Cluster the fence
--   key lives in another slot than the channel's keys; the script would then need a
--   per-slot fence copy (e.g. pgcast:{c}:fence, raised by claim per channel or by
--   every publish), and SPUBLISH instead of PUBLISH for sharded pub/sub.
-- ARGV[1] leader epoch (integer)          ARGV[2] outbox id ('' = no de-duplication)
-- ARGV[3] epoch token for a new history   ARGV[4] channel as a JSON string
-- ARGV[5] data as JSON text               ARGV[6] history max length (approximate)
-- ARGV[7] TTL seconds                     ARGV[8] live pub/sub channel
-- ARGV[9] how many recent outbox ids the ids zset keeps
-- Returns {status, offset, epoch}: status 'published' | 'duplicate' | 'fenced'.

local leader = tonumber(ARGV[1])
local fence = tonumber(redis.call('GET', KEYS[4]) or '0')
if leader < fence then
  return {'fenced', false, false}
end
if leader > fence then
  -- Keeps the fence up even after Redis lost it (restart without persistence).
  redis.call('SET', KEYS[4], ARGV[1])
end

local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  -- A new history: whatever is left of an older one (evicted meta) must not mix in.
  redis.call('DEL', KEYS[2], KEYS[3])
  epoch = ARGV[3]
  redis.call('HSET', KEYS[1], 'e', epoch, 's', 0)
end

local outbox_id = ARGV[2]
if outbox_id ~= '' and redis.call('ZSCORE', KEYS[3], outbox_id) then
  return {'duplicate', false, epoch}
end

local offset = redis.call('HINCRBY', KEYS[1], 's', 1)
local offset_text = string.format('%d', offset)
local frame = '{"type":"message","channel":' .. ARGV[4] .. ',"offset":"' .. offset_text
  .. '","data":' .. ARGV[5] .. '}'
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], offset_text .. '-0', 'f', frame)

local ttl = tonumber(ARGV[7])
if outbox_id ~= '' then
  redis.call('ZADD', KEYS[3], outbox_id, outbox_id)
  -- Keep the newest ARGV[9] ids: enough to cover any batch a crashed leader left.
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[9]) + 1))
  redis.call('EXPIRE', KEYS[3], ttl)
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('PUBLISH', ARGV[8], offset_text .. ':' .. epoch .. ':' .. frame)
return {'published', offset, epoch}
