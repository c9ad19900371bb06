#!lua flags=allow-oom
--[[
  ack: complete a batch of jobs: fenced XACK, XDEL, then counters and latency
  histograms, atomically.

  An entry is acknowledged only while the calling consumer still owns it: XACK
  itself does not check, so a worker whose job was reclaimed by another would
  otherwise ack it away from its new owner. Ownership is read with one ranged
  XPENDING per stream (this consumer's entries between the batch's lowest and
  highest id), not one call per entry; an id missing from it is checked on
  its own before it is refused. XACK and XDEL come before any counter update,
  and counters go through pcall, so a full Redis (which refuses HINCRBY) still
  completes jobs. allow-oom: completing jobs is what frees memory.

  Latency buckets are computed by the caller: bucket b holds durations d (us)
  with floor(4 * log2(d)) = b, four per doubling. Counts are aggregated per
  name and bucket in Lua tables, so field names are built once per distinct
  name and bucket, not once per job.

  KEYS[1]    stats hash          HINCRBY "completed:<p>", "ownership_lost:<p>",
                                 "name:completed:<name>", "name:reclaimed:<name>",
                                 "name:ownership_lost:<name>"
  KEYS[2..5] streams             critical, high, medium, low
  KEYS[6]    latency hash        HINCRBY "wait:<bucket>:<name>", "run:<bucket>:<name>",
                                 "wait_sum:<name>", "run_sum:<name>" (us)
  KEYS[7]    events stream       XADD "completed" per job acknowledged (see ARGV[5])
  KEYS[8..]  result keys         strings: a completed job's result (see ARGV)
  ARGV[1]    group
  ARGV[2]    consumer            the owner the entries must still have
  ARGV[3]    per-name metrics    1 = keep counters and histograms per name
  ARGV[4]    result ttl          ms a kept result lives
  ARGV[5]    events cap          approximate MAXLEN of the events stream;
                                 0 = no events
  ARGV[6]    now                 Unix ms
  ARGV[7..]  eleven per job:     priority index (1..4), entry id, job name,
                                 wait bucket, run bucket, wait (us, ready to
                                 start), run (us, start to finish), reclaims
                                 (deliveries - 1), job id, result key index
                                 into KEYS (0 = no result), result bytes
                                 (opaque; also the event's "result");
                                 sorted by priority, then id, for the ranged
                                 read (any order is correct, just slower)

  Returns    {OK, lost}          lost: the entry ids not acknowledged, owned
                                 by another consumer or no longer pending at
                                 all; every other entry was acknowledged
]]
local stats, latency = KEYS[1], KEYS[6]
local group, consumer = ARGV[1], ARGV[2]
local by_name = ARGV[3] == '1'
local names = { 'critical', 'high', 'medium', 'low' }
local FIRST, STRIDE = 7, 11
local result_ttl = ARGV[4]
local events, events_cap, now = KEYS[7], tonumber(ARGV[5]), ARGV[6]
local OK = 0

local completed, lost = { 0, 0, 0, 0 }, { 0, 0, 0, 0 }
local per_name = {}
local function for_name(name)
  local s = per_name[name]
  if not s then
    s = { completed = 0, reclaimed = 0, lost = 0, wait = {}, run = {}, wait_sum = 0, run_sum = 0 }
    per_name[name] = s
  end
  return s
end

-- Group the batch by stream, then fence each stream's ids with one ranged
-- XPENDING for this consumer.
local asked = { {}, {}, {}, {} }
for i = FIRST, #ARGV, STRIDE do
  table.insert(asked[tonumber(ARGV[i])], i)
end

local owned = { {}, {}, {}, {} }
local lost_ids = {}
for p = 1, 4 do
  local jobs = asked[p]
  if #jobs > 0 then
    local first, last = ARGV[jobs[1] + 1], ARGV[jobs[#jobs] + 1]
    local range = redis.call('XPENDING', KEYS[1 + p], group, first, last,
                             #jobs * 4 + 1000, consumer)
    local mine = {}
    for _, entry in ipairs(range) do
      mine[entry[1]] = true
    end
    for _, i in ipairs(jobs) do
      local id = ARGV[i + 1]
      if not mine[id] then
        -- Not in the range read (unsorted input, or more of our entries in
        -- the range than read): ask for this one alone.
        local pending = redis.call('XPENDING', KEYS[1 + p], group, id, id, 1)
        mine[id] = pending[1] ~= nil and pending[1][2] == consumer
      end
      if mine[id] then
        table.insert(owned[p], i)
        completed[p] = completed[p] + 1
        if by_name then
          local s = for_name(ARGV[i + 2])
          local wait, run = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
          s.completed = s.completed + 1
          s.reclaimed = s.reclaimed + tonumber(ARGV[i + 7])
          s.wait[wait] = (s.wait[wait] or 0) + 1
          s.run[run] = (s.run[run] or 0) + 1
          s.wait_sum = s.wait_sum + tonumber(ARGV[i + 5])
          s.run_sum = s.run_sum + tonumber(ARGV[i + 6])
        end
      else
        lost_ids[#lost_ids + 1] = id
        lost[p] = lost[p] + 1
        if by_name then
          local s = for_name(ARGV[i + 2])
          s.lost = s.lost + 1
        end
      end
    end
  end
end

for p = 1, 4 do
  local ids = {}
  for _, i in ipairs(owned[p]) do
    ids[#ids + 1] = ARGV[i + 1]
  end
  if #ids > 0 then
    redis.call('XACK', KEYS[1 + p], group, unpack(ids))
    redis.call('XDEL', KEYS[1 + p], unpack(ids))
  end
end

-- Results and events of the acknowledged jobs, through pcall: a full Redis
-- still completes the jobs (their results and events are then not kept).
for p = 1, 4 do
  for _, i in ipairs(owned[p]) do
    local key_index = tonumber(ARGV[i + 9])
    if key_index > 0 then
      redis.pcall('SET', KEYS[key_index], ARGV[i + 10], 'PX', result_ttl)
    end
    if events_cap > 0 then
      redis.pcall('XADD', events, 'MAXLEN', '~', events_cap, '*', 'ev', 'completed',
                  'job', ARGV[i + 8], 'name', ARGV[i + 2], 'p', names[p], 'at', now,
                  'result', ARGV[i + 10])
    end
  end
end

-- Counters last, through pcall: a full Redis still completes the jobs.
local function add(key, field, n)
  if n > 0 then redis.pcall('HINCRBY', key, field, n) end
end
for p = 1, 4 do
  add(stats, 'completed:' .. names[p], completed[p])
  add(stats, 'ownership_lost:' .. names[p], lost[p])
end
for name, s in pairs(per_name) do
  add(stats, 'name:completed:' .. name, s.completed)
  add(stats, 'name:reclaimed:' .. name, s.reclaimed)
  add(stats, 'name:ownership_lost:' .. name, s.lost)
  for bucket, n in pairs(s.wait) do
    add(latency, 'wait:' .. bucket .. ':' .. name, n)
  end
  for bucket, n in pairs(s.run) do
    add(latency, 'run:' .. bucket .. ':' .. name, n)
  end
  add(latency, 'wait_sum:' .. name, s.wait_sum)
  add(latency, 'run_sum:' .. name, s.run_sum)
end
return { OK, lost_ids }
