-- pgcast reset script: start a new, empty epoch for ONE channel and tell its gateways, when
-- events may be missing that Redis never had (the WAL capture's slot was invalidated: what
-- Postgres recycled before the leader read it is gone). Clients holding a position of the
-- old epoch are told recovered:false, live (the '!r' notice) or when they resume.
-- The layout is pgcast/keys.py's (pgcast.keys.encode_reset builds the same notice).
--
-- KEYS[1] meta hash   KEYS[2] history stream   KEYS[3] ids zset   KEYS[4] the fence copy of
--   the channel's slot (as publish.lua)
-- ARGV[1] leader epoch (integer)   ARGV[2] the new epoch token   ARGV[3] TTL seconds
-- ARGV[4] the live (shard) pub/sub channel   ARGV[5] 'PUBLISH' or 'SPUBLISH'
-- Returns the new epoch, or {false, 'fenced'} when a newer leader raised the fence.

local leader = tonumber(ARGV[1])
local fence = tonumber(redis.call('GET', KEYS[4]) or '0')
if leader < fence then
  return {false, 'fenced'}
end
if leader > fence then
  redis.call('SET', KEYS[4], ARGV[1])
end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[1], 'e', ARGV[2], 's', 0, 'l', ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call(ARGV[5] == 'SPUBLISH' and 'SPUBLISH' or 'PUBLISH', ARGV[4], '!r' .. ARGV[2])
return ARGV[2]
