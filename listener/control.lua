-- pgcast control script: fence, de-duplicate, store and broadcast ONE server-side control
-- (an outbox row of channel '[control]': pgcast.disconnect / pgcast.unsubscribe).
-- The layout is pgcast/keys.py's: stream entry '<outbox id>-0' with field 'f' = the control
-- JSON, and the live payload pgcast.keys.encode_control(outbox id, json) = '<id>:<json>'.
-- Runs in the publisher's pipeline between the publish script's calls, in outbox-id order,
-- so a gateway hears the events its transaction published before it first.
--
-- KEYS[1] the global fence key (pgcast:fence)   KEYS[2] the control stream (pgcast:control)
--   (two slots on Redis Cluster: like publish.lua, this script runs on one Redis)
-- ARGV[1] leader epoch (integer)   ARGV[2] outbox id (decimal, no sign, no leading zero)
-- ARGV[3] the control JSON (checked by the listener)   ARGV[4] stream max length (approximate)
-- ARGV[5] the live pub/sub channel (pgcast:control:live)
-- Returns 'p' (published), 'd' (duplicate: the stream already reached this id, a retried
-- batch) or 'fenced' (a newer leader raised the fence: nothing written).

local leader = tonumber(ARGV[1])
local fence = tonumber(redis.call('GET', KEYS[1]) or '0')
if leader < fence then
  return 'fenced'
end
if leader > fence then
  redis.call('SET', KEYS[1], ARGV[1])
end

-- XADD refuses an id at or below the stream's last one: exactly the entries this leader or
-- an earlier one already wrote (pgcast.disconnect/unsubscribe commit in id order).
local added = redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], ARGV[2] .. '-0', 'f', ARGV[3])
if type(added) == 'table' and added.err then
  if string.find(added.err, 'equal or smaller', 1, true) then
    return 'd'
  end
  return added  -- any other error (out of memory ...): the batch is retried
end
redis.call('PUBLISH', ARGV[5], ARGV[2] .. ':' .. ARGV[3])
return 'p'
