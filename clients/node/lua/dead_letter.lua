#!lua
--[[
  dead_letter: move one job to the queue's dead letters, atomically: fenced
  XACK and XDEL of the stream entry, XADD to the dead-letter stream, counters.

  No flags: when Redis is out of memory the whole call is refused before any
  write, the job stays pending with its owner, and the worker tries again
  later. A dead-letter move is never dropped.

  KEYS[1]    stats hash          HINCRBY "dead:<p>", "failed:<p>" (when a run
                                 failed), "ownership_lost:<p>", and per name
                                 "name:dead:<name>", "name:failed:<name>",
                                 "name:reclaimed:<name>", "name:ownership_lost:<name>"
  KEYS[2..5] streams             critical, high, medium, low
  KEYS[6]    dead-letter stream
  KEYS[7]    events stream       XADD "failed" (when a run failed) and
                                 "dead_lettered" (see ARGV[14])
  ARGV[1]    group
  ARGV[2]    consumer            the owner the entry must still have
  ARGV[3]    entry id
  ARGV[4]    priority index      1..4: the job's stream
  ARGV[5]    error               why the job failed (text)
  ARGV[6]    now                 Unix ms
  ARGV[7]    job id              '' when the envelope could not be read
  ARGV[8]    attempts            attempts made
  ARGV[9]    max dead letters    approximate MAXLEN for the dead-letter
                                 stream; 0 = never trimmed
  ARGV[10]   job name
  ARGV[11]   failed run          1 when a handler run failed (not for poison
                                 deliveries or undecodable entries)
  ARGV[12]   reclaims            deliveries - 1
  ARGV[13]   per-name metrics    1 = keep per-name counters
  ARGV[14]   events cap          approximate MAXLEN of the events stream;
                                 0 = no events

  Returns    {OK, lost, dead id} lost: {} when moved, and dead id is the new
                                 dead-letter entry; {entry id} when not, the
                                 consumer no longer owning the entry (reclaimed
                                 by another worker), and dead id is false
]]
local stats, dead, events = KEYS[1], KEYS[6], KEYS[7]
local group, consumer, id = ARGV[1], ARGV[2], ARGV[3]
local p, err, now = tonumber(ARGV[4]), ARGV[5], ARGV[6]
local stream = KEYS[1 + p]
local names = { 'critical', 'high', 'medium', 'low' }
local priority = names[p]
local OK = 0
local job_id, attempts, max_dead = ARGV[7], ARGV[8], tonumber(ARGV[9])
local name, failed_run, reclaims = ARGV[10], ARGV[11] == '1', tonumber(ARGV[12])
local by_name = ARGV[13] == '1'
local events_cap = tonumber(ARGV[14])

local pending = redis.call('XPENDING', stream, group, id, id, 1)
if not (pending[1] and pending[1][2] == consumer) then
  redis.pcall('HINCRBY', stats, 'ownership_lost:' .. priority, 1)
  if by_name then redis.pcall('HINCRBY', stats, 'name:ownership_lost:' .. name, 1) end
  return { OK, { id }, false }
end

local envelope = ''
local entry = redis.call('XRANGE', stream, id, id)
if entry[1] then
  local fields = entry[1][2]
  for f = 1, #fields, 2 do
    if fields[f] == 'e' then envelope = fields[f + 1] end
  end
end

local args = { dead }
if max_dead > 0 then
  args[#args + 1] = 'MAXLEN'
  args[#args + 1] = '~'
  args[#args + 1] = max_dead
end
for _, v in ipairs({ '*', 'e', envelope, 'job', job_id, 'priority', priority,
                     'error', err, 'failed_ms', now, 'attempts', attempts,
                     'entry', id }) do
  args[#args + 1] = v
end
local dead_id = redis.call('XADD', unpack(args))
redis.call('XACK', stream, group, id)
redis.call('XDEL', stream, id)
if events_cap > 0 then
  if failed_run then
    redis.call('XADD', events, 'MAXLEN', '~', events_cap, '*', 'ev', 'failed', 'job', job_id,
               'name', name, 'p', priority, 'at', now, 'attempt', attempts, 'error', err)
  end
  redis.call('XADD', events, 'MAXLEN', '~', events_cap, '*', 'ev', 'dead_lettered',
             'job', job_id, 'name', name, 'p', priority, 'at', now, 'attempt', attempts,
             'error', err, 'dead', dead_id)
end
redis.call('HINCRBY', stats, 'dead:' .. priority, 1)
if failed_run then redis.call('HINCRBY', stats, 'failed:' .. priority, 1) end
if by_name then
  redis.call('HINCRBY', stats, 'name:dead:' .. name, 1)
  if failed_run then redis.call('HINCRBY', stats, 'name:failed:' .. name, 1) end
  if reclaims > 0 then redis.call('HINCRBY', stats, 'name:reclaimed:' .. name, reclaims) end
end
return { OK, {}, dead_id }
