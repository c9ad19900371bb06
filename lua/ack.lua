#!lua flags=allow-oom
--[[
  ack: complete a batch of jobs: fenced XACK, XDEL, then counters, atomically.

  An entry is acknowledged only while the calling consumer still owns it: XACK
  itself does not check, so a worker whose job was reclaimed by another would
  otherwise ack it away from its new owner. Ownership is read with one ranged
  XPENDING per stream (this consumer's entries between the batch's lowest and
  highest id), not one call per entry; an id missing from it is checked on
  its own before it is refused. XACK and XDEL come before any counter
  update, and counters go through pcall, so a full Redis (which refuses HINCRBY)
  still completes jobs. allow-oom: completing jobs is what frees memory.

  KEYS[1]    stats hash          HINCRBY "completed:<priority>", "ownership_lost"
  KEYS[2..5] streams             critical, high, medium, low
  ARGV[1]    group
  ARGV[2]    consumer            the owner the entries must still have
  ARGV[3..]  pairs               priority index (1..4), entry id; sorted by
                                 priority, then id, for the ranged read (any
                                 order is correct, just slower)

  Returns    {acked, fenced id...}
                                 how many were acknowledged, then the ids that
                                 were not: owned by another consumer, or no
                                 longer pending at all
]]
local stats = KEYS[1]
local group = ARGV[1]
local consumer = ARGV[2]
local names = { 'critical', 'high', 'medium', 'low' }

-- Group the batch by stream, then fence each stream's ids with one ranged
-- XPENDING for this consumer (cheaper than one XPENDING per id).
local asked = { {}, {}, {}, {} }
for i = 3, #ARGV, 2 do
  table.insert(asked[tonumber(ARGV[i])], ARGV[i + 1])
end

local owned = { {}, {}, {}, {} }
local reply = { 0 }
for p = 1, 4 do
  local ids = asked[p]
  if #ids > 0 then
    local range = redis.call('XPENDING', KEYS[1 + p], group, ids[1], ids[#ids],
                             #ids * 4 + 1000, consumer)
    local mine = {}
    for _, entry in ipairs(range) do
      mine[entry[1]] = true
    end
    for _, id in ipairs(ids) do
      if not mine[id] then
        -- Not in the range read (unsorted input, or more of our entries in
        -- the range than read): ask for this one alone.
        local pending = redis.call('XPENDING', KEYS[1 + p], group, id, id, 1)
        mine[id] = pending[1] ~= nil and pending[1][2] == consumer
      end
      if mine[id] then
        table.insert(owned[p], id)
      else
        reply[#reply + 1] = id
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
for p = 1, 4 do
  if #owned[p] > 0 then
    redis.pcall('HINCRBY', stats, 'completed:' .. names[p], #owned[p])
  end
end
if #reply > 1 then
  redis.pcall('HINCRBY', stats, 'ownership_lost', #reply - 1)
end
return reply
