"""The Lua scripts of `redis_store`: each is one atomic call on one ledger window.

Every script gets the window's keys in this order (all in one hash slot):

    KEYS[1] used    hash  dim -> settled usage (never for the gauge)
    KEYS[2] leased  hash  dim -> the sum of the live leases (kept, never recomputed)
    KEYS[3] lease   hash  "<dim>:<sidecar>" -> that sidecar's lease (absent when 0)
    KEYS[4] expiry  zset  sidecar -> lease deadline (ms); member <=> it holds a lease
    KEYS[5] seq     hash  sidecar -> last applied settle sequence number
    KEYS[6] seen    zset  sidecar -> when it last acted (ms): when to forget its seq

and the same first arguments:

    ARGV[1] sidecar id   ARGV[2] PEXPIREAT of the keys in ms ('' = never expire)
    ARGV[3] how long a sidecar's seq is kept after it was last seen (ms)
    ARGV[4] how many expired sidecars one call reaps at most

Time is Redis's (TIME), so sidecars' clocks never matter. Every script first reaps: a
sidecar whose deadline has passed loses its lease (subtracted from `leased`), its seq
stays until `seen` says it is older than ARGV[3]. Numbers going back to Redis are
formatted with '%d' (a Lua number is a double; inputs are bounded to 2^53 - 1).

A Share reply is a flat array: now_ms, live sidecars, applied (0/1), the last settle
sequence number applied for this sidecar (-1: none kept), then per dimension in the
order asked: this sidecar's lease, what this call granted, used, leased.
"""

from __future__ import annotations

_PRELUDE = """
local USED, LEASED, LEASE, EXPIRY, SEQ, SEEN = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local sidecar, expire_at = ARGV[1], ARGV[2]
local keep_ms, reap_limit = tonumber(ARGV[3]), tonumber(ARGV[4])

local function int(n) return string.format('%d', n) end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function field(dim, who) return dim .. ':' .. who end

local function drop_lease(who)
  for _, dim in ipairs(redis.call('HKEYS', LEASED)) do
    local f = field(dim, who)
    local held = tonumber(redis.call('HGET', LEASE, f) or '0')
    if held > 0 then
      redis.call('HINCRBY', LEASED, dim, int(-held))
      redis.call('HDEL', LEASE, f)
    end
  end
  redis.call('ZREM', EXPIRY, who)
end

local function reap(now)
  local dead = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', int(now), 'LIMIT', 0, reap_limit)
  for _, who in ipairs(dead) do drop_lease(who) end
  local cutoff = int(now - keep_ms)
  local gone = redis.call('ZRANGEBYSCORE', SEEN, '-inf', cutoff, 'LIMIT', 0, reap_limit)
  for _, who in ipairs(gone) do
    redis.call('HDEL', SEQ, who)
    redis.call('ZREM', SEEN, who)
  end
end

local function holds(who)
  for _, dim in ipairs(redis.call('HKEYS', LEASED)) do
    if redis.call('HEXISTS', LEASE, field(dim, who)) == 1 then return true end
  end
  return false
end

-- After a change: the deadline while the sidecar holds anything, last seen, the TTLs.
local function touch(now, ttl)
  if holds(sidecar) then
    redis.call('ZADD', EXPIRY, int(now + ttl), sidecar)
  else
    redis.call('ZREM', EXPIRY, sidecar)
  end
  redis.call('ZADD', SEEN, int(now), sidecar)
  if expire_at ~= '' then
    for i = 1, #KEYS do redis.call('PEXPIREAT', KEYS[i], expire_at) end
  end
end

local function fields_of(dims)
  local fields = {}
  for i = 1, #dims do fields[i] = field(dims[i], sidecar) end
  return fields
end

local function share(now, dims, gauge, granted, applied)
  local n = #dims
  local seq = tonumber(redis.call('HGET', SEQ, sidecar) or '-1')
  local out = {now, redis.call('ZCARD', EXPIRY), applied, seq}
  local lease = redis.call('HMGET', LEASE, unpack(fields_of(dims)))
  local used = redis.call('HMGET', USED, unpack(dims))
  local leased = redis.call('HMGET', LEASED, unpack(dims))
  for i = 1, n do out[4 + i] = tonumber(lease[i] or '0') end
  for i = 1, n do out[4 + n + i] = granted[i] or 0 end
  for i = 1, n do
    out[4 + 2 * n + i] = (dims[i] == gauge) and 0 or tonumber(used[i] or '0')
  end
  for i = 1, n do out[4 + 3 * n + i] = tonumber(leased[i] or '0') end
  return out
end
"""

# ARGV[5] gauge dim, [6] ttl_ms, [7] n, then n dims, n caps, n wants.
LEASE = (
    _PRELUDE
    + """
local gauge, ttl, n = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local dims = {unpack(ARGV, 8, 7 + n)}
local now = now_ms()
reap(now)
local fields = fields_of(dims)
local used = redis.call('HMGET', USED, unpack(dims))
local leased = redis.call('HMGET', LEASED, unpack(dims))
local granted = {}
for i = 1, n do
  local cap, want = tonumber(ARGV[7 + n + i]), tonumber(ARGV[7 + 2 * n + i])
  local u = (dims[i] == gauge) and 0 or tonumber(used[i] or '0')
  local g = math.max(0, math.min(want, cap - u - tonumber(leased[i] or '0')))
  granted[i] = g
  if g > 0 then
    redis.call('HINCRBY', LEASE, fields[i], int(g))
    redis.call('HINCRBY', LEASED, dims[i], int(g))
  end
end
touch(now, ttl)
return share(now, dims, gauge, granted, 1)
"""
)

# ARGV[5] gauge dim, [6] ttl_ms, [7] seq, [8] n, then n dims, n used deltas, n give-backs.
SETTLE = (
    _PRELUDE
    + """
local gauge, ttl, seq, n = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local dims = {unpack(ARGV, 9, 8 + n)}
local now = now_ms()
reap(now)
if seq <= tonumber(redis.call('HGET', SEQ, sidecar) or '-1') then
  return share(now, dims, gauge, {}, 0)
end
local fields = fields_of(dims)
local held = redis.call('HMGET', LEASE, unpack(fields))
for i = 1, n do
  local u, back = tonumber(ARGV[8 + n + i]), tonumber(ARGV[8 + 2 * n + i])
  if dims[i] == gauge then u = 0 end
  if u > 0 then redis.call('HINCRBY', USED, dims[i], int(u)) end
  local h = tonumber(held[i] or '0')
  local removed = math.min(h, u + back)
  if removed > 0 then
    if removed == h then
      redis.call('HDEL', LEASE, fields[i])
    else
      redis.call('HINCRBY', LEASE, fields[i], int(-removed))
    end
    redis.call('HINCRBY', LEASED, dims[i], int(-removed))
  end
end
redis.call('HSET', SEQ, sidecar, ARGV[7])
touch(now, ttl)
return share(now, dims, gauge, {}, 1)
"""
)

# ARGV[5] ttl_ms. Replies {now_ms, 1 when the sidecar still holds a lease here else 0}.
HEARTBEAT = (
    _PRELUDE
    + """
local now = now_ms()
reap(now)
if not redis.call('ZSCORE', EXPIRY, sidecar) then return {now, 0} end
touch(now, tonumber(ARGV[5]))
return {now, 1}
"""
)

# ARGV[5] gauge dim, [6] n, then n dims.
READ = (
    _PRELUDE
    + """
local n = tonumber(ARGV[6])
local now = now_ms()
reap(now)
return share(now, {unpack(ARGV, 7, 6 + n)}, ARGV[5], {}, 0)
"""
)
