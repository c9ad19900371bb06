#!lua
--[[
  retry: schedule another attempt of a failed job, atomically: fenced, the new
  envelope into the delayed set, XACK and XDEL of the old entry, counters.

  No flags: when Redis is out of memory the whole call is refused before any
  write; the job stays pending with its owner and the worker tries again.

  KEYS[1]    stats hash          HINCRBY "retried:<p>", "failed:<p>",
                                 "ownership_lost:<p>", and per name
                                 "name:retried:<name>", "name:failed:<name>",
                                 "name:reclaimed:<name>", "name:ownership_lost:<name>"
  KEYS[2..5] streams             critical, high, medium, low
  KEYS[6]    delayed zset
  KEYS[7]    events stream       XADD "failed" and "retried" (see ARGV[10])
  ARGV[1]    group
  ARGV[2]    consumer            the owner the entry must still have
  ARGV[3]    entry id
  ARGV[4]    priority index      1..4: the job's stream, where the next
                                 attempt will run too
  ARGV[5]    due                 Unix ms of the next attempt
  ARGV[6]    envelope            re-encoded with the attempt count raised
  ARGV[7]    job name
  ARGV[8]    reclaims            deliveries - 1 of the failed attempt
  ARGV[9]    per-name metrics    1 = keep per-name counters
  ARGV[10]   events cap          approximate MAXLEN of the events stream;
                                 0 = no events
  ARGV[11]   job id
  ARGV[12]   attempt             the attempt that failed (1-based)
  ARGV[13]   error               why it failed (text)
  ARGV[14]   now                 Unix ms

  Returns    {OK, lost}          lost: {} when scheduled; {entry id} when not,
                                 the consumer no longer owning the entry
                                 (reclaimed by another worker)
]]
local stats, delayed, events = KEYS[1], KEYS[6], KEYS[7]
local group, consumer, id = ARGV[1], ARGV[2], ARGV[3]
local p, due, envelope = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local name, reclaims, by_name = ARGV[7], tonumber(ARGV[8]), ARGV[9] == '1'
local events_cap, job_id, attempt = tonumber(ARGV[10]), ARGV[11], ARGV[12]
local err, now = ARGV[13], ARGV[14]
local stream = KEYS[1 + p]
local names = { 'critical', 'high', 'medium', 'low' }
local OK = 0

local pending = redis.call('XPENDING', stream, group, id, id, 1)
if not (pending[1] and pending[1][2] == consumer) then
  redis.pcall('HINCRBY', stats, 'ownership_lost:' .. names[p], 1)
  if by_name then redis.pcall('HINCRBY', stats, 'name:ownership_lost:' .. name, 1) end
  return { OK, { id } }
end

redis.call('ZADD', delayed, due, p .. envelope)
redis.call('XACK', stream, group, id)
redis.call('XDEL', stream, id)
redis.call('HINCRBY', stats, 'retried:' .. names[p], 1)
redis.call('HINCRBY', stats, 'failed:' .. names[p], 1)
if events_cap > 0 then
  redis.call('XADD', events, 'MAXLEN', '~', events_cap, '*', 'ev', 'failed', 'job', job_id,
             'name', name, 'p', names[p], 'at', now, 'attempt', attempt, 'error', err)
  redis.call('XADD', events, 'MAXLEN', '~', events_cap, '*', 'ev', 'retried', 'job', job_id,
             'name', name, 'p', names[p], 'at', now, 'attempt', attempt, 'due', due)
end
if by_name then
  redis.call('HINCRBY', stats, 'name:retried:' .. name, 1)
  redis.call('HINCRBY', stats, 'name:failed:' .. name, 1)
  if reclaims > 0 then redis.call('HINCRBY', stats, 'name:reclaimed:' .. name, reclaims) end
end
return { OK, {} }
