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

  Latency buckets: bucket b holds durations d (us) with floor(4 * log2(d)) = b,
  so four buckets per doubling; d below 1 us counts as 1 us.

  KEYS[1]    stats hash          HINCRBY "completed:<p>", "ownership_lost:<p>",
                                 "name:completed:<name>", "name:reclaimed:<name>",
                                 "name:ownership_lost:<name>"
  KEYS[2..5] streams             critical, high, medium, low
  KEYS[6]    latency hash        HINCRBY "wait:<bucket>:<name>", "run:<bucket>:<name>",
                                 "wait_sum:<name>", "run_sum:<name>" (us)
  ARGV[1]    group
  ARGV[2]    consumer            the owner the entries must still have
  ARGV[3]    per-name metrics    1 = keep counters and histograms per name
  ARGV[4..]  six per job:        priority index (1..4), entry id, job name,
                                 wait (us, ready to start), run (us, start to
                                 finish), reclaims (deliveries - 1); sorted by
                                 priority, then id, for the ranged read (any
                                 order is correct, just slower)

  Returns    {acked, fenced id...}
                                 how many were acknowledged, then the ids that
                                 were not: owned by another consumer, or no
                                 longer pending at all
]]
local stats, latency = KEYS[1], KEYS[6]
local group, consumer = ARGV[1], ARGV[2]
local by_name = ARGV[3] == '1'
local names = { 'critical', 'high', 'medium', 'low' }
local LOG2 = math.log(2)

local counts, timings = {}, {}
local function count(field, n)
  counts[field] = (counts[field] or 0) + n
end
local function time(kind, name, us)
  us = math.max(tonumber(us), 1)
  local bucket = math.floor(4 * math.log(us) / LOG2)
  local field = kind .. ':' .. bucket .. ':' .. name
  timings[field] = (timings[field] or 0) + 1
  local sum = kind .. '_sum:' .. name
  timings[sum] = (timings[sum] or 0) + us
end

-- Group the batch by stream, then fence each stream's ids with one ranged
-- XPENDING for this consumer.
local asked = { {}, {}, {}, {} }
for i = 4, #ARGV, 6 do
  table.insert(asked[tonumber(ARGV[i])], i)
end

local owned = { {}, {}, {}, {} }
local reply = { 0 }
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
      local id, name = ARGV[i + 1], ARGV[i + 2]
      if not mine[id] then
        -- Not in the range read (unsorted input, or more of our entries in
        -- the range than read): ask for this one alone.
        local pending = redis.call('XPENDING', KEYS[1 + p], group, id, id, 1)
        mine[id] = pending[1] ~= nil and pending[1][2] == consumer
      end
      if mine[id] then
        table.insert(owned[p], id)
        count('completed:' .. names[p], 1)
        if by_name then
          count('name:completed:' .. name, 1)
          local reclaims = tonumber(ARGV[i + 5])
          if reclaims > 0 then count('name:reclaimed:' .. name, reclaims) end
          time('wait', name, ARGV[i + 3])
          time('run', name, ARGV[i + 4])
        end
      else
        reply[#reply + 1] = id
        count('ownership_lost:' .. names[p], 1)
        if by_name then count('name:ownership_lost:' .. name, 1) end
      end
    end
  end
end

for p = 1, 4 do
  local ids = owned[p]
  if #ids > 0 then
    redis.call('XACK', KEYS[1 + p], group, unpack(ids))
    redis.call('XDEL', KEYS[1 + p], unpack(ids))
    reply[1] = reply[1] + #ids
  end
end
for field, n in pairs(counts) do
  redis.pcall('HINCRBY', stats, field, n)
end
for field, n in pairs(timings) do
  redis.pcall('HINCRBY', latency, field, n)
end
return reply
