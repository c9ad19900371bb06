#!lua
--[[
  flow_child: finish one child of a flow, completed or dead-lettered, and
  settle its parent, atomically: a crash cannot leave the child finished and
  its parent waiting.

  Fenced like ack and dead_letter: only the entry's current owner finishes it.
  A child is counted once: its id is added to the flow record with HSETNX, and
  only a new field counts (a duplicate delivery that completes again changes
  nothing for the parent). When the last child is counted, the parent's
  envelope is added to its stream; when a child whose policy is "fail the
  parent" is dead-lettered, the parent goes to its queue's dead letters
  instead and never runs. Either way the record then expires after its
  retention.

  No flags: when Redis is out of memory the whole call is refused before any
  write; the child stays pending with its owner, who tries again.

  KEYS[1]    stats hash          the child's queue: "completed:<p>" or
                                 "dead:<p>", "failed:<p>", "ownership_lost:<p>",
                                 and per name "name:completed:<name>",
                                 "name:dead:<name>", "name:failed:<name>"
  KEYS[2..5] streams             critical, high, medium, low: the child's queue
  KEYS[6]    latency hash        the child's queue (as ack writes it)
  KEYS[7]    events stream       the child's queue: "completed" or "failed" and
                                 "dead_lettered" (see ARGV[12])
  KEYS[8]    dead-letter stream  the child's queue
  KEYS[9]    result key          the child's result string (see ARGV[11])
  KEYS[10]   flow hash           the parent's record
  KEYS[11]   parent stream       the parent's queue, the parent's priority
  KEYS[12]   parent stats hash   "waiting_children", "enqueued:<p>", "dead:<p>"
  KEYS[13]   parent dead letters the parent's queue's dead-letter stream
  ARGV[1]    group
  ARGV[2]    consumer            the owner the entry must still have
  ARGV[3]    entry id
  ARGV[4]    priority index      1..4: the child's stream
  ARGV[5]    job id              the child's id
  ARGV[6]    job name
  ARGV[7]    now                 Unix ms
  ARGV[8]    outcome             "completed" or "dead"
  ARGV[9]    result or error     completed: the result bytes ('' = none);
                                 dead: why the child failed (text)
  ARGV[10]   fail parent         1 = a dead child fails the parent, 0 = it
                                 counts as done
  ARGV[11]   result ttl          ms the child's own result key lives; 0 = the
                                 child's queue keeps no results
  ARGV[12]   events cap          approximate MAXLEN of the events stream;
                                 0 = no events
  ARGV[13]   per-name metrics    1 = keep counters and histograms per name
  ARGV[14]   wait bucket         latency bucket of wait (see ack)
  ARGV[15]   run bucket          latency bucket of run
  ARGV[16]   wait                us, ready to start
  ARGV[17]   run                 us, start to finish
  ARGV[18]   reclaims            deliveries - 1
  ARGV[19]   attempts            attempts made (dead)
  ARGV[20]   failed run          1 when a handler run failed (dead)
  ARGV[21]   max dead letters    approximate MAXLEN of the dead-letter
                                 streams; 0 = never trimmed

  Returns    {OK, lost, parent, dead id}
                                 lost: {} when finished, {entry id} when the
                                 consumer no longer owns the entry (nothing
                                 else written); parent: 0 not counted (already
                                 counted, or the parent no longer waits),
                                 1 counted, 2 released into its stream,
                                 3 dead-lettered; dead id: the child's
                                 dead-letter id, or false
]]
local stats, latency, events, dead = KEYS[1], KEYS[6], KEYS[7], KEYS[8]
local result_key, flow = KEYS[9], KEYS[10]
local parent_stream, parent_stats, parent_dead = KEYS[11], KEYS[12], KEYS[13]
local group, consumer, id = ARGV[1], ARGV[2], ARGV[3]
local p, job_id, name, now = tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7]
local completed, detail = ARGV[8] == 'completed', ARGV[9]
local fail_parent, result_ttl = ARGV[10] == '1', tonumber(ARGV[11])
local events_cap, by_name = tonumber(ARGV[12]), ARGV[13] == '1'
local attempts, failed_run = ARGV[19], ARGV[20] == '1'
local max_dead = tonumber(ARGV[21])
local stream = KEYS[1 + p]
local names = { 'critical', 'high', 'medium', 'low' }
local priority = names[p]
local OK = 0

local pending = redis.call('XPENDING', stream, group, id, id, 1)
if not (pending[1] and pending[1][2] == consumer) then
  redis.pcall('HINCRBY', stats, 'ownership_lost:' .. priority, 1)
  return { OK, { id }, 0, false }
end

local function dead_letter(key, fields)
  local args = { key }
  if max_dead > 0 then
    args[#args + 1] = 'MAXLEN'
    args[#args + 1] = '~'
    args[#args + 1] = max_dead
  end
  args[#args + 1] = '*'
  for _, v in ipairs(fields) do
    args[#args + 1] = v
  end
  return redis.call('XADD', unpack(args))
end

local dead_id = false
if not completed then
  local envelope = ''
  local entry = redis.call('XRANGE', stream, id, id)
  if entry[1] then
    local fields = entry[1][2]
    for f = 1, #fields, 2 do
      if fields[f] == 'e' then envelope = fields[f + 1] end
    end
  end
  dead_id = dead_letter(dead, { 'e', envelope, 'job', job_id, 'priority', priority,
                                'error', detail, 'failed_ms', now, 'attempts', attempts,
                                'entry', id })
end
redis.call('XACK', stream, group, id)
redis.call('XDEL', stream, id)

-- The parent: count this child once, then release or fail the parent.
local function uncount_waiting()
  -- Never below 0 (the stats hash may have been deleted since): a negative
  -- counter would not read as a count.
  if tonumber(redis.call('HGET', parent_stats, 'waiting_children') or '0') > 0 then
    redis.call('HINCRBY', parent_stats, 'waiting_children', -1)
  end
end
local settled = 0
local state = redis.call('HGET', flow, 'state')
local record = completed and ('r' .. detail) or ('e' .. detail)
if state and redis.call('HSETNX', flow, 'c:' .. job_id, record) == 1 and state == 'waiting' then
  local parent = redis.call('HMGET', flow, 'e', 'id', 'p', 'ttl', 'name')
  local parent_p = names[tonumber(parent[3])]
  if not completed and fail_parent then
    dead_letter(parent_dead, { 'e', parent[1], 'job', parent[2], 'priority', parent_p,
                               'error', 'child ' .. job_id .. ' failed: ' .. detail,
                               'failed_ms', now, 'attempts', 0, 'entry', '0-0' })
    redis.call('HSET', flow, 'state', 'failed', 'finished', now)
    redis.call('PEXPIRE', flow, parent[4])
    uncount_waiting()
    redis.call('HINCRBY', parent_stats, 'dead:' .. parent_p, 1)
    settled = 3
  elseif redis.call('HINCRBY', flow, 'pending', -1) <= 0 then
    redis.call('XADD', parent_stream, '*', 'e', parent[1])
    redis.call('HSET', flow, 'state', 'released', 'finished', now)
    redis.call('PEXPIRE', flow, parent[4])
    uncount_waiting()
    redis.call('HINCRBY', parent_stats, 'enqueued:' .. parent_p, 1)
    settled = 2
  else
    settled = 1
  end
end

-- The child's own result, events and counters, through pcall: a full Redis
-- still finishes the child and settles its parent.
if completed and result_ttl > 0 and detail ~= '' then
  redis.pcall('SET', result_key, detail, 'PX', result_ttl)
end
local function add(key, field, n)
  if n > 0 then redis.pcall('HINCRBY', key, field, n) end
end
if completed then
  add(stats, 'completed:' .. priority, 1)
  if events_cap > 0 then
    redis.pcall('XADD', events, 'MAXLEN', '~', events_cap, '*', 'ev', 'completed',
                'job', job_id, 'name', name, 'p', priority, 'at', now, 'result', detail)
  end
  if by_name then
    add(stats, 'name:completed:' .. name, 1)
    add(stats, 'name:reclaimed:' .. name, tonumber(ARGV[18]))
    add(latency, 'wait:' .. ARGV[14] .. ':' .. name, 1)
    add(latency, 'run:' .. ARGV[15] .. ':' .. name, 1)
    add(latency, 'wait_sum:' .. name, tonumber(ARGV[16]))
    add(latency, 'run_sum:' .. name, tonumber(ARGV[17]))
  end
else
  add(stats, 'dead:' .. priority, 1)
  if failed_run then add(stats, 'failed:' .. priority, 1) end
  if events_cap > 0 then
    if failed_run then
      redis.pcall('XADD', events, 'MAXLEN', '~', events_cap, '*', 'ev', 'failed', 'job', job_id,
                  'name', name, 'p', priority, 'at', now, 'attempt', attempts, 'error', detail)
    end
    redis.pcall('XADD', events, 'MAXLEN', '~', events_cap, '*', 'ev', 'dead_lettered',
                'job', job_id, 'name', name, 'p', priority, 'at', now, 'attempt', attempts,
                'error', detail, 'dead', dead_id)
  end
  if by_name then
    add(stats, 'name:dead:' .. name, 1)
    if failed_run then add(stats, 'name:failed:' .. name, 1) end
    add(stats, 'name:reclaimed:' .. name, tonumber(ARGV[18]))
  end
end
return { OK, {}, settled, dead_id }
