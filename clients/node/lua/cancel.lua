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

  A removed job that is a flow child settles its parent in the same call, as
  a child that failed with the error "cancelled" (flow_child's rule): with
  "fail the parent" the parent goes to its dead letters; otherwise it counts
  as done, and the parent is released when it was the last child. Without
  this a cancelled child would leave its parent waiting forever.

  No flags: it writes a stop request and counters, so a full Redis refuses
  it before any write.

  KEYS[1]    stats hash          HINCRBY "cancelled:<p>"
  KEYS[2..5] streams             critical, high, medium, low
  KEYS[6]    delayed zset        member = priority digit .. envelope
  KEYS[7]    stop requests zset  member = priority index .. ":" .. entry id,
                                 score = Unix ms of the request
  KEYS[8]    job metadata hash   the job's tracked metadata (may not exist)
  KEYS[9]    live hash           tracked jobs that have not ended: a removed
                                 job's record there moves into its metadata
  KEYS[10]   flow hash           only for a flow child: its parent's record
  KEYS[11]   parent stream       the parent's queue, the parent's priority
  KEYS[12]   parent stats hash   "waiting_children", "enqueued:<p>", "dead:<p>"
  KEYS[13]   parent dead letters the parent's queue's dead-letter stream
  ARGV[1]    group
  ARGV[2]    now                 Unix ms
  ARGV[3]    stop ttl            ms a stop request (and the zset) is kept
  ARGV[4]    finished ttl        ms a removed job's metadata is kept;
                                 0 = not tracked, metadata untouched
  ARGV[5]    where               "entry" (a stream entry) or "delayed"
  ARGV[6]    priority index      1..4: the job's priority
  ARGV[7]    entry id or member  a stream entry id, or the exact delayed
                                 member (opaque bytes, never decoded here)
  ARGV[8]    job id              the job's id
  ARGV[9]    fail parent         only for a flow child: 1 = its removal fails
                                 the parent, 0 = it counts as done
  ARGV[10]   why                 optional: "drained" when a drain or an
                                 obliterate removes the job: an active job is
                                 then left alone (no stop request), the
                                 removal counts as "drained:<p>" and the
                                 parent learns "drained"; default "cancelled"

  Returns    {OK, outcome}       outcome: 1 = removed, 2 = active (a stop
                                 request is recorded, unless "drained"),
                                 0 = not there any more
]]
local stats, delayed, stops, meta = KEYS[1], KEYS[6], KEYS[7], KEYS[8]
local group, now, stop_ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local finished_ttl, where = tonumber(ARGV[4]), ARGV[5]
local p, target = tonumber(ARGV[6]), ARGV[7]
local live = KEYS[9]
local flow, parent_stream, parent_stats, parent_dead = KEYS[10], KEYS[11], KEYS[12], KEYS[13]
local job_id, fail_parent = ARGV[8], ARGV[9] == '1'
local names = { 'critical', 'high', 'medium', 'low' }
local OK = 0
local GONE, REMOVED, ACTIVE = 0, 1, 2
local REASON = ARGV[10] == 'drained' and 'drained' or 'cancelled'

-- The parent of a removed flow child: count the child once, then fail or
-- release the parent (the same rule as flow_child for a dead child).
local function settle_parent()
  local state = redis.call('HGET', flow, 'state')
  if not (state == 'waiting' and redis.call('HSETNX', flow, 'c:' .. job_id, 'e' .. REASON) == 1) then
    return
  end
  local parent = redis.call('HMGET', flow, 'e', 'id', 'p', 'ttl')
  local parent_p = names[tonumber(parent[3])]
  if fail_parent then
    local err = 'child ' .. job_id .. ' failed: ' .. REASON
    redis.call('XADD', parent_dead, '*', 'e', parent[1], 'job', parent[2], 'priority', parent_p,
               'error', err, 'failed_ms', now, 'attempts', 0, 'entry', '0-0')
    redis.call('HSET', flow, 'state', 'failed', 'finished', now)
    redis.call('HINCRBY', parent_stats, 'dead:' .. parent_p, 1)
  elseif redis.call('HINCRBY', flow, 'pending', -1) <= 0 then
    redis.call('XADD', parent_stream, '*', 'e', parent[1])
    redis.call('HSET', flow, 'state', 'released', 'finished', now)
    redis.call('HINCRBY', parent_stats, 'enqueued:' .. parent_p, 1)
  else
    return
  end
  redis.call('PEXPIRE', flow, parent[4])
  if tonumber(redis.call('HGET', parent_stats, 'waiting_children') or '0') > 0 then
    redis.call('HINCRBY', parent_stats, 'waiting_children', -1)
  end
end

local function removed()
  if flow then settle_parent() end
  if finished_ttl > 0 then
    local record = redis.call('HGET', live, job_id)
    if record then
      redis.call('HDEL', live, job_id)
      redis.call('HSET', meta, 'p', names[p], 'name', string.match(record, '^%d %S+ (.*)$') or '')
    end
    if record or redis.call('EXISTS', meta) == 1 then
      redis.call('HSET', meta, 'state', 'cancelled', 'fin', now)
      redis.call('PEXPIRE', meta, finished_ttl)
    end
  end
  redis.pcall('HINCRBY', stats, REASON .. ':' .. names[p], 1)
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
  if REASON == 'drained' then return { OK, ACTIVE } end
  redis.call('ZADD', stops, now, p .. ':' .. target)
  redis.call('ZREMRANGEBYSCORE', stops, '-inf', '(' .. (now - stop_ttl))
  redis.call('PEXPIRE', stops, stop_ttl)
  return { OK, ACTIVE }
end
if redis.call('XDEL', stream, target) == 1 then return removed() end
return { OK, GONE }
