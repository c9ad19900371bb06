#!lua
--[[
  cancel: remove one job no worker has claimed yet, or, when a worker holds
  it, record a request that it stop. The caller has found where the job is
  (a stream entry or a delayed member); this script decides atomically, so a
  fetch can never slip in between the check and the removal:

  - a stream entry pending in the group is active: it is not deleted (that
    would make it a lost job) but a stop request is recorded, which the
    owner's heartbeat reports to it;
  - a stream entry that exists and is not pending is waiting: XDEL;
  - a delayed member is removed with ZREM of the exact member;
  - anything else is gone from there (moved or finished): nothing changes,
    and the caller looks for the job again.

  No flags: it writes a stop request and counters, so a full Redis refuses
  it before any write.

  KEYS[1]    stats hash          HINCRBY "cancelled:<p>"
  KEYS[2..5] streams             critical, high, medium, low
  KEYS[6]    delayed zset        member = priority digit .. envelope
  KEYS[7]    stop requests zset  member = priority index .. ":" .. entry id,
                                 score = Unix ms of the request
  KEYS[8]    job metadata hash   the job's tracked metadata (may not exist)
  ARGV[1]    group
  ARGV[2]    now                 Unix ms
  ARGV[3]    stop ttl            ms a stop request (and the zset) is kept
  ARGV[4]    finished ttl        ms a removed job's metadata is kept;
                                 0 = not tracked, metadata untouched
  ARGV[5]    where               "entry" (a stream entry) or "delayed"
  ARGV[6]    priority index      1..4: the job's priority
  ARGV[7]    entry id or member  a stream entry id, or the exact delayed
                                 member (opaque bytes, never decoded here)

  Returns    {OK, outcome}       outcome: 1 = removed, 2 = active (a stop
                                 request is recorded), 0 = not there any more
]]
local stats, delayed, stops, meta = KEYS[1], KEYS[6], KEYS[7], KEYS[8]
local group, now, stop_ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local finished_ttl, where = tonumber(ARGV[4]), ARGV[5]
local p, target = tonumber(ARGV[6]), ARGV[7]
local names = { 'critical', 'high', 'medium', 'low' }
local OK = 0
local GONE, REMOVED, ACTIVE = 0, 1, 2

local function removed()
  if finished_ttl > 0 and redis.call('EXISTS', meta) == 1 then
    redis.call('HSET', meta, 'state', 'cancelled', 'fin', now)
    redis.call('PEXPIRE', meta, finished_ttl)
  end
  redis.pcall('HINCRBY', stats, 'cancelled:' .. names[p], 1)
  return { OK, REMOVED }
end

if where == 'delayed' then
  if redis.call('ZREM', delayed, target) == 1 then return removed() end
  return { OK, GONE }
end

local stream = KEYS[1 + p]
-- A stream without the group (no worker started yet) has nothing pending.
local pending = redis.pcall('XPENDING', stream, group, target, target, 1)
if type(pending) == 'table' and pending.err then
  if not string.find(pending.err, 'NOGROUP', 1, true) then
    return redis.error_reply(pending.err)
  end
  pending = {}
end
if pending[1] then
  redis.call('ZADD', stops, now, p .. ':' .. target)
  redis.call('ZREMRANGEBYSCORE', stops, '-inf', '(' .. (now - stop_ttl))
  redis.call('PEXPIRE', stops, stop_ttl)
  return { OK, ACTIVE }
end
if redis.call('XDEL', stream, target) == 1 then return removed() end
return { OK, GONE }
