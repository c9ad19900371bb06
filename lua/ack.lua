#!lua flags=allow-oom
--[[
  ack: complete a batch of jobs: fenced XACK, XDEL, then counters, atomically.

  An entry is acknowledged only while the calling consumer still owns it: XACK
  itself does not check, so a worker whose job was reclaimed by another would
  otherwise ack it away from its new owner. XACK and XDEL come before any counter
  update, and counters go through pcall, so a full Redis (which refuses HINCRBY)
  still completes jobs. allow-oom: completing jobs is what frees memory.

  KEYS[1]    stats hash          HINCRBY "completed:<priority>", "ownership_lost"
  KEYS[2..5] streams             critical, high, medium, low
  ARGV[1]    group
  ARGV[2]    consumer            the owner the entries must still have
  ARGV[3..]  pairs               priority index (1..4), entry id

  Returns    {acked, fenced id...}
                                 how many were acknowledged, then the ids that
                                 were not: owned by another consumer, or no
                                 longer pending at all
]]
local stats = KEYS[1]
local group = ARGV[1]
local consumer = ARGV[2]
local names = { 'critical', 'high', 'medium', 'low' }

local owned = { {}, {}, {}, {} }
local reply = { 0 }
for i = 3, #ARGV, 2 do
  local p = tonumber(ARGV[i])
  local id = ARGV[i + 1]
  local pending = redis.call('XPENDING', KEYS[1 + p], group, id, id, 1)
  if pending[1] and pending[1][2] == consumer then
    table.insert(owned[p], id)
  else
    reply[#reply + 1] = id
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
for p = 1, 4 do
  if #owned[p] > 0 then
    redis.pcall('HINCRBY', stats, 'completed:' .. names[p], #owned[p])
  end
end
if #reply > 1 then
  redis.pcall('HINCRBY', stats, 'ownership_lost', #reply - 1)
end
return reply
