-- pgcast publish script: fence, de-duplicate, number, store and broadcast the events of ONE
-- channel, in order (one call per run of same-channel events: the per-call work, fence,
-- epoch, trimming and TTLs, is paid once per run instead of once per event).
-- The layout is pgcast/keys.py's; the frame built here must equal
-- pgcast.keys.message_frame(channel, offset, data_json) byte for byte.
--
-- KEYS[1] meta hash   KEYS[2] history stream   KEYS[3] ids zset   (one channel, one hash tag)
-- KEYS[4] the leader fence copy of the channel's slot: pgcast:fence with one Redis, the
--   partition's pgcast:{<tag>}:fence on Redis Cluster (pgcast.keys.Layout.fence_key), so
--   the script touches one slot (a key of another slot fails the call before any write)
-- ARGV[1] leader epoch (integer)          ARGV[2] epoch token for a new history
-- ARGV[3] channel as a JSON string        ARGV[4] history max length (approximate)
-- ARGV[5] TTL seconds                     ARGV[6] live (shard) pub/sub channel
-- ARGV[7] how many recent de-duplication ids the ids zset keeps
-- ARGV[8] the events' index: 'id:length,id:length,...', one entry per event, in order:
--   its de-duplication id and the byte length of its data. The id: '' = none; an outbox
--   id (digits): published once, remembered in the ids zset; or, for an event decoded
--   from the WAL, its position '<commit lsn, 20 digits>.<n-th event of the transaction,
--   10 digits>': a channel's WAL events come in that order, so one mark per channel (the
--   meta's 'w', compared as text) tells what was published, however long the replay
-- ARGV[9] the events' data (JSON text), concatenated in that order
--   (two arguments instead of two per event: packing and parsing many small
--   arguments was the listener's largest per-event cost)
-- ARGV[10] the channel's watermark epoch: the last epoch the leader knows Redis
--   acknowledged (Postgres' pgcast.watermark, or this leader's own publishes), '' = none
-- ARGV[11] the watermark's top offset in that epoch
--   Redis behind its watermark (another epoch with messages, or a lower top) went back in time: a
--   restart from an older snapshot, a failover to a lagging replica. Its offsets may
--   already be in clients' hands for other events, so a new epoch starts instead.
-- ARGV[12] '1': start a new epoch unless this leader made the current one (a new leader
--   that finds another Redis than its predecessor recorded, for the channels of the rows
--   it found waiting: their last batch may be lost and would be numbered anew)
-- ARGV[13] the publish command: 'PUBLISH' (one Redis) or 'SPUBLISH' (Redis Cluster: sharded
--   pub/sub, the message stays inside the shard that owns the live channel's slot)
-- Returns {epoch, last offset, statuses, behind}: statuses has one byte per event, 'p'
-- (published; the published events' offsets run up to the last offset, consecutive)
-- or 'd' (duplicate); behind is '' or 'epoch:top' of the state Redis had gone back to;
-- {false, 'fenced'} when a newer leader raised the fence (nothing published).

local leader = tonumber(ARGV[1])
local fence = tonumber(redis.call('GET', KEYS[4]) or '0')
if leader < fence then
  return {false, 'fenced'}
end
if leader > fence then
  -- Keeps the fence up even after Redis lost it (restart without persistence).
  redis.call('SET', KEYS[4], ARGV[1])
end

local meta = redis.call('HMGET', KEYS[1], 'e', 's', 'l', 'w')
local epoch, offset = meta[1], tonumber(meta[2]) or 0
-- 'w': the newest WAL position published to this channel (see ARGV[8])
local wal_mark = meta[4]
local behind = ''
-- Another epoch that holds no message yet was made by a reader (a gateway subscribing after
-- Redis lost the channel): nobody can hold an offset of it, so it goes on (one notice to
-- clients, not two). An epoch of the watermark's with a lower top went back in time.
local stale = (epoch ~= ARGV[10] and offset > 0) or (epoch == ARGV[10] and offset < tonumber(ARGV[11]))
-- 'l' is the leader epoch that made the channel's epoch: a renewal happens once per leader,
-- so a retried batch (its first try's reply lost) continues the renewed epoch.
local renew = ARGV[12] == '1' and tonumber(meta[3] or '0') ~= leader
if epoch and ((ARGV[10] ~= '' and stale) or renew) then
  behind = epoch .. ':' .. offset
  epoch = false
end
local created = not epoch
if created then
  -- A new history: whatever is left of an older one (evicted meta) must not mix in.
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('HDEL', KEYS[1], 'w')
  epoch = ARGV[2]
  offset = 0
  wal_mark = false
end

local publish = ARGV[13] == 'SPUBLISH' and 'SPUBLISH' or 'PUBLISH'
local head = '{"type":"message","channel":' .. ARGV[3] .. ',"offset":"'
local live_prefix = ':' .. epoch .. ':'
local statuses = {}
local deduplicated = false
local data = ARGV[9]
local pos = 1
local wal_moved = false
for dedupe_id, length in string.gmatch(ARGV[8], '([%d.]*):(%d+)') do
  local stop = pos + tonumber(length)
  local wal = string.find(dedupe_id, '.', 1, true)
  if wal and wal_mark and dedupe_id <= wal_mark then
    statuses[#statuses + 1] = 'd'
  elseif not wal and dedupe_id ~= '' and redis.call('ZSCORE', KEYS[3], dedupe_id) then
    statuses[#statuses + 1] = 'd'
  else
    offset = offset + 1
    local offset_text = string.format('%d', offset)
    local frame = head .. offset_text .. '","data":' .. string.sub(data, pos, stop - 1) .. '}'
    redis.call('XADD', KEYS[2], offset_text .. '-0', 'f', frame)
    if wal then
      wal_mark = dedupe_id
      wal_moved = true
    elseif dedupe_id ~= '' then
      redis.call('ZADD', KEYS[3], dedupe_id, dedupe_id)
      deduplicated = true
    end
    redis.call(publish, ARGV[6], offset_text .. live_prefix .. frame)
    statuses[#statuses + 1] = 'p'
  end
  pos = stop
end

local ttl = tonumber(ARGV[5])
-- One HSET: the epoch and top, the WAL mark when it moved, the maker of a new epoch.
local fields = {'e', epoch, 's', offset}
if wal_moved then
  fields[#fields + 1] = 'w'
  fields[#fields + 1] = wal_mark
end
if created then
  fields[#fields + 1] = 'l'
  fields[#fields + 1] = ARGV[1]
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('XTRIM', KEYS[2], 'MAXLEN', '~', ARGV[4])
redis.call('EXPIRE', KEYS[2], ttl)
if deduplicated then
  -- Keep the newest ARGV[7] ids: enough to cover any batch a crashed leader left.
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[7]) + 1))
  redis.call('EXPIRE', KEYS[3], ttl)
end
return {epoch, offset, table.concat(statuses), behind}
