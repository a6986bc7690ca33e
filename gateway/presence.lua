-- One channel's presence, every change atomic with its announcement (pgcast.keys).
-- KEYS: members hash (conn -> member JSON), expiry zset (conn -> deadline, Redis ms),
--       sequence counter, the channel's live pub/sub channel.
-- ARGV: PUBLISH or SPUBLISH (Redis Cluster), op, the channel name as a JSON string,
--       TTL in ms, then per op (below; numbered as if the first were absent).
-- Time is Redis' own (TIME): gateways' clocks never matter. Each join and leave bumps
-- the sequence and is published as "!p<seq>:<frame>", so a watcher that reads the
-- members (which returns the sequence) can tell older announcements from newer ones.
local publish = table.remove(ARGV, 1)
local op, channel, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local function announce(kind, member)
  local seq = redis.call('INCR', KEYS[3])
  redis.call(publish, KEYS[4], '!p' .. seq .. ':{"type":"' .. kind .. '","channel":'
    .. channel .. ',"member":' .. member .. '}')
end

-- Members whose gateway stopped refreshing them (it died) leave here, announced.
local function sweep()
  local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
  for _, conn in ipairs(gone) do
    local member = redis.call('HGET', KEYS[1], conn)
    redis.call('HDEL', KEYS[1], conn)
    redis.call('ZREM', KEYS[2], conn)
    if member then announce('leave', member) end
  end
  return #gone
end

local function put(conn, member)
  redis.call('HSET', KEYS[1], conn, member)
  redis.call('ZADD', KEYS[2], now + ttl, conn)
end

-- A channel nobody refreshes any more disappears with its last member's expiry.
local function keep()
  for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl * 2) end
end

if op == 'track' then
  -- ARGV[4] conn, ARGV[5] member JSON, ARGV[6] member cap; returns 0 when full
  sweep()
  local conn, member = ARGV[4], ARGV[5]
  local old = redis.call('HGET', KEYS[1], conn)
  if not old and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[6]) then return 0 end
  put(conn, member)
  keep()
  if old ~= member then announce('join', member) end
  return 1
elseif op == 'untrack' then
  -- ARGV[4..] conns; returns how many were members
  local left = 0
  for i = 4, #ARGV do
    local member = redis.call('HGET', KEYS[1], ARGV[i])
    if member then
      redis.call('HDEL', KEYS[1], ARGV[i])
      redis.call('ZREM', KEYS[2], ARGV[i])
      announce('leave', member)
      left = left + 1
    end
  end
  return left
elseif op == 'refresh' then
  -- ARGV[4..] conn, member JSON pairs: push each deadline out; a member Redis lost
  -- (restart, failover, or swept after a stall of its gateway) joins again.
  -- Two commands for the whole chunk (ZMSCORE, one ZADD): per-member calls were most
  -- of Redis' cost of keeping 10,000 members alive (bench.presence).
  sweep()
  local conns = {}
  for i = 4, #ARGV, 2 do conns[#conns + 1] = ARGV[i] end
  if #conns == 0 then return 0 end
  local known = redis.call('ZMSCORE', KEYS[2], unpack(conns))
  local deadlines = {}
  for j, conn in ipairs(conns) do
    if known[j] then
      deadlines[#deadlines + 1] = now + ttl
      deadlines[#deadlines + 1] = conn
    else
      put(conn, ARGV[3 + 2 * j])
      announce('join', ARGV[3 + 2 * j])
    end
  end
  if #deadlines > 0 then redis.call('ZADD', KEYS[2], 'XX', unpack(deadlines)) end
  keep()
  return 0
elseif op == 'sweep' then
  return sweep()
elseif op == 'members' then
  -- returns {sequence, member JSONs}
  sweep()
  return {tonumber(redis.call('GET', KEYS[3]) or '0'), redis.call('HVALS', KEYS[1])}
end
return redis.error_reply('pgcast presence: unknown op ' .. tostring(op))
