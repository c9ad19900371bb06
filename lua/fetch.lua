#!lua flags=allow-oom
--[[
  fetch: claim up to COUNT new jobs for one consumer, strictly by priority.

  Reads critical first and moves to the next stream only while fewer than COUNT
  jobs were found, so a lower-priority job is never claimed while a higher one is
  waiting. allow-oom: XREADGROUP adds no data, and workers must keep draining
  (and so freeing memory) when Redis is full.

  KEYS[1..4] streams             critical, high, medium, low
  KEYS[5]    pause flag          while it exists, nothing is claimed
  ARGV[1]    group
  ARGV[2]    consumer
  ARGV[3]    count               the most jobs to claim, >= 1

  Returns    {n, p, id, envelope, ...}
                                 n jobs as triples: priority index (1..4),
                                 entry id, envelope bytes (false when the
                                 entry has no "e" field: not ours, poison)
             {0, id1, id2, id3, id4}
                                 nothing waiting; the group's last delivered id
                                 per stream, so the caller can block for
                                 anything newer without a race
             {-1}                the queue is paused
]]
local group = ARGV[1]
local consumer = ARGV[2]
local wanted = tonumber(ARGV[3])

if redis.call('EXISTS', KEYS[5]) == 1 then
  return { -1 }
end

local reply = { 0 }
local found = 0
for p = 1, 4 do
  local res = redis.call('XREADGROUP', 'GROUP', group, consumer,
                         'COUNT', wanted - found, 'STREAMS', KEYS[p], '>')
  if res then
    for _, entry in ipairs(res[1][2]) do
      local fields = entry[2]
      local envelope = false
      for f = 1, #fields, 2 do
        if fields[f] == 'e' then envelope = fields[f + 1] end
      end
      reply[#reply + 1] = p
      reply[#reply + 1] = entry[1]
      reply[#reply + 1] = envelope
      found = found + 1
    end
  end
  if found >= wanted then break end
end

if found > 0 then
  reply[1] = found
  return reply
end

for p = 1, 4 do
  local last = '0-0'
  for _, info in ipairs(redis.call('XINFO', 'GROUPS', KEYS[p])) do
    local name, delivered
    for f = 1, #info, 2 do
      if info[f] == 'name' then name = info[f + 1] end
      if info[f] == 'last-delivered-id' then delivered = info[f + 1] end
    end
    if name == group then last = delivered end
  end
  reply[#reply + 1] = last
end
return reply
