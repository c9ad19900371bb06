#!lua
--[[
  schedule_tick: claim one tick of a schedule and enqueue its job, once,
  however many schedulers try: compare-and-set of the schedule's due time
  (the caller says which due time it saw and what the next one is), with a
  per-tick idempotency key as a second guard (a schedule removed and added
  again with the same tick still makes one job).

  No flags: when Redis is out of memory the whole call is refused before any
  write, and the tick stays due for the next try.

  KEYS[1]    stats hash          HINCRBY "enqueued:<p>", "name:enqueued:<name>",
                                 "schedule_ticks", "schedule_skipped"
  KEYS[2..5] streams             critical, high, medium, low
  KEYS[6]    due zset            schedule id -> next due, Unix ms
  KEYS[7]    tick key            string: the id of the job made for this tick
  ARGV[1]    schedule id
  ARGV[2]    expected due        Unix ms: the due time the caller read
  ARGV[3]    next due            Unix ms: the tick after this one
  ARGV[4]    run                 1 = enqueue a job for this tick; 0 = skip it
                                 (a missed tick under the skip policy)
  ARGV[5]    priority index      1..4
  ARGV[6]    job id
  ARGV[7]    tick ttl            ms the tick key lives, >= 1
  ARGV[8]    job name
  ARGV[9]    per-name counters   1 = keep them
  ARGV[10]   envelope            bytes (opaque, never decoded here)

  Returns    {OK, job}           the tick was claimed and the due time moved
                                 on; job: the id of the job enqueued, or
                                 false when skipped (or made already)
             {STALE}             the due time was not the expected one
                                 (another scheduler took the tick, or the
                                 schedule changed or is gone): nothing written
]]
local stats, due_set, tick_key = KEYS[1], KEYS[6], KEYS[7]
local id, expected, next_due = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local run, p, job_id = ARGV[4] == '1', tonumber(ARGV[5]), ARGV[6]
local ttl, name, by_name, envelope = tonumber(ARGV[7]), ARGV[8], ARGV[9] == '1', ARGV[10]
local names = { 'critical', 'high', 'medium', 'low' }
local OK, STALE = 0, 4

local current = redis.call('ZSCORE', due_set, id)
if not current or tonumber(current) ~= expected then
  return { STALE }
end
local fresh = run and redis.call('EXISTS', tick_key) == 0

redis.call('ZADD', due_set, 'XX', next_due, id)
if not fresh then
  redis.call('HINCRBY', stats, 'schedule_skipped', 1)
  return { OK, false }
end
redis.call('SET', tick_key, job_id, 'PX', ttl)
redis.call('XADD', KEYS[1 + p], '*', 'e', envelope)
redis.call('HINCRBY', stats, 'enqueued:' .. names[p], 1)
redis.call('HINCRBY', stats, 'schedule_ticks', 1)
if by_name then redis.call('HINCRBY', stats, 'name:enqueued:' .. name, 1) end
return { OK, job_id }
