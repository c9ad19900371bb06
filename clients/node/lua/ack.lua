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

  Per-job work is kept small (lua/README.md, convention 10): a job is three
  arguments, and the caller sums the latency histograms, sums and reclaims
  of a batch per job name, so Lua sees each name's figures once, not each
  job's. Those sums cover every run the batch reports, fenced ones included
  (they ran); completed and ownership_lost count jobs by their fencing.
  Latency bucket b holds durations d (us) with floor(4 * log2(d)) = b, four
  per doubling.

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
  ARGV[7]    jobs                J
  ARGV[8..]  three per job:      priority index (1..4), entry id, name slot
                                 (1-based, into the names below); sorted by
                                 priority, then id, for the ranged read (any
                                 order is correct, just slower)
  then       names               N, then per name: the name, reclaims (sum
                                 of deliveries - 1), wait sum (us, ready to
                                 start), run sum (us, start to finish), W,
                                 W pairs (wait bucket, runs), R, R pairs
                                 (run bucket, runs)
  then       details (optional)  present when events are on or a job has a
                                 result; three per job, in the jobs' order:
                                 job id, result key index into KEYS (0 = no
                                 result), result bytes (opaque; also the
                                 event's "result")

  Returns    {OK, lost}          lost: the entry ids not acknowledged, owned
                                 by another consumer or no longer pending at
                                 all; every other entry was acknowledged
]]
local stats, latency = KEYS[1], KEYS[6]
local group, consumer = ARGV[1], ARGV[2]
local by_name = ARGV[3] == '1'
local names = { 'critical', 'high', 'medium', 'low' }
local result_ttl = ARGV[4]
local events, events_cap, now = KEYS[7], tonumber(ARGV[5]), ARGV[6]
local FIRST, STRIDE = 8, 3
local last_job = FIRST + STRIDE * (tonumber(ARGV[7]) - 1)
local OK = 0

-- The names, each with its sums over the batch.
local per_name = {}
local at = last_job + STRIDE + 1
for slot = 1, tonumber(ARGV[at - 1]) do
  local s = { name = ARGV[at], reclaimed = ARGV[at + 1], wait_sum = ARGV[at + 2],
              run_sum = ARGV[at + 3], completed = 0, lost = 0, wait = {}, run = {} }
  at = at + 4
  for _, histogram in ipairs({ s.wait, s.run }) do
    for _ = 1, tonumber(ARGV[at]) do
      histogram[#histogram + 1] = { ARGV[at + 1], ARGV[at + 2] }
      at = at + 2
    end
    at = at + 1
  end
  per_name[slot] = s
end
-- The details of the job whose arguments start at i: k = 0 its job id,
-- 1 its result key index, 2 its result. Absent when the batch has none.
local details = at <= #ARGV and at or nil
local function detail(i, k)
  return ARGV[details + 3 * (i - FIRST) / STRIDE + k]
end

local completed, lost = { 0, 0, 0, 0 }, { 0, 0, 0, 0 }

-- Group the batch by stream (argument positions), then fence each stream's
-- ids with one ranged XPENDING for this consumer.
local asked = { {}, {}, {}, {} }
for i = FIRST, last_job, STRIDE do
  local jobs = asked[tonumber(ARGV[i])]
  jobs[#jobs + 1] = i
end

-- owned[p]: the argument positions of the entries acknowledged; acked[p]
-- their ids.
local owned, acked = { {}, {}, {}, {} }, { {}, {}, {}, {} }
local lost_ids = {}
for p = 1, 4 do
  local jobs = asked[p]
  local n = #jobs
  if n > 0 then
    local stream = KEYS[1 + p]
    local range = redis.call('XPENDING', stream, group, ARGV[jobs[1] + 1],
                             ARGV[jobs[n] + 1], n * 4 + 1000, consumer)
    local mine = {}
    for k = 1, #range do
      mine[range[k][1]] = true
    end
    local mine_at, ids, done = owned[p], acked[p], 0
    for k = 1, n do
      local i = jobs[k]
      local id = ARGV[i + 1]
      local ok = mine[id]
      if not ok then
        -- Not in the range read (unsorted input, or more of our entries in
        -- the range than read): ask for this one alone.
        local pending = redis.call('XPENDING', stream, group, id, id, 1)
        ok = pending[1] ~= nil and pending[1][2] == consumer
      end
      local s = per_name[tonumber(ARGV[i + 2])]
      if ok then
        done = done + 1
        mine_at[done], ids[done] = i, id
        s.completed = s.completed + 1
      else
        lost_ids[#lost_ids + 1] = id
        lost[p] = lost[p] + 1
        s.lost = s.lost + 1
      end
    end
    completed[p] = done
  end
end

for p = 1, 4 do
  local ids = acked[p]
  if #ids > 0 then
    redis.call('XACK', KEYS[1 + p], group, unpack(ids))
    redis.call('XDEL', KEYS[1 + p], unpack(ids))
  end
end

-- Results and events of the acknowledged jobs, through pcall: a full Redis
-- still completes the jobs (their results and events are then not kept).
if details then
  for p = 1, 4 do
    for _, i in ipairs(owned[p]) do
      local key_index = tonumber(detail(i, 1))
      if key_index > 0 then
        redis.pcall('SET', KEYS[key_index], detail(i, 2), 'PX', result_ttl)
      end
      if events_cap > 0 then
        redis.pcall('XADD', events, 'MAXLEN', '~', events_cap, '*', 'ev', 'completed',
                    'job', detail(i, 0), 'name', per_name[tonumber(ARGV[i + 2])].name,
                    'p', names[p], 'at', now, 'result', detail(i, 2))
      end
    end
  end
end

-- Counters last, through pcall: a full Redis still completes the jobs.
local function add(key, field, n)
  if tonumber(n) > 0 then redis.pcall('HINCRBY', key, field, n) end
end
for p = 1, 4 do
  add(stats, 'completed:' .. names[p], completed[p])
  add(stats, 'ownership_lost:' .. names[p], lost[p])
end
if by_name then
  for _, s in ipairs(per_name) do
    local name = s.name
    add(stats, 'name:completed:' .. name, s.completed)
    add(stats, 'name:reclaimed:' .. name, s.reclaimed)
    add(stats, 'name:ownership_lost:' .. name, s.lost)
    for _, pair in ipairs(s.wait) do
      add(latency, 'wait:' .. pair[1] .. ':' .. name, pair[2])
    end
    for _, pair in ipairs(s.run) do
      add(latency, 'run:' .. pair[1] .. ':' .. name, pair[2])
    end
    add(latency, 'wait_sum:' .. name, s.wait_sum)
    add(latency, 'run_sum:' .. name, s.run_sum)
  end
end
return { OK, lost_ids }
