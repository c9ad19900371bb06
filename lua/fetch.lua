#!lua flags=allow-oom
--[[
  fetch: claim up to COUNT new jobs for one consumer, strictly by priority.

  Reads critical first and moves to the next stream only while fewer than COUNT
  jobs were found, so a lower-priority job is never claimed while a higher one is
  waiting. allow-oom: XREADGROUP adds no data, and workers must keep draining
  (and so freeing memory) when Redis is full.

  KEYS[1]    stats hash          (not written)
  KEYS[2..5] streams             critical, high, medium, low
  KEYS[6]    pause flag          while it exists, nothing is claimed
  ARGV[1]    group
  ARGV[2]    consumer
  ARGV[3]    count               the most jobs to claim, >= 1

  Returns    {OK, jobs, last}    jobs: triples of priority index (1..4),
                                 entry id, envelope bytes (false when the
                                 entry has no "e" field: not ours, poison).
                                 last: when jobs is empty, the group's last
                                 delivered id per stream (four), so the caller
                                 can block for anything newer without a race;
                                 empty otherwise
             {PAUSED}            the queue is paused; nothing was claimed
]]
local group = ARGV[1]
local consumer = ARGV[2]
local wanted = tonumber(ARGV[3])

local OK, PAUSED = 0, 2
local paused = KEYS[6]

if redis.call('EXISTS', paused) == 1 then
  return { PAUSED }
end

local jobs = {}
local found = 0
for p = 1, 4 do
  local res = redis.call('XREADGROUP', 'GROUP', group, consumer,
                         'COUNT', wanted - found, 'STREAMS', KEYS[1 + p], '>')
  if res then
    for _, entry in ipairs(res[1][2]) do
      local fields = entry[2]
      local envelope = false
      for f = 1, #fields, 2 do
        if fields[f] == 'e' then envelope = fields[f + 1] end
      end
      jobs[#jobs + 1] = p
      jobs[#jobs + 1] = entry[1]
      jobs[#jobs + 1] = envelope
      found = found + 1
    end
  end
  if found >= wanted then break end
end

if found > 0 then
  return { OK, jobs, {} }
end

local last_ids = {}
for p = 1, 4 do
  local last = '0-0'
  for _, info in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1 + p])) do
    local name, delivered
    for f = 1, #info, 2 do
      if info[f] == 'name' then name = info[f + 1] end
      if info[f] == 'last-delivered-id' then delivered = info[f + 1] end
    end
    if name == group then last = delivered end
  end
  last_ids[p] = last
end
return { OK, jobs, last_ids }
