#!lua flags=allow-oom
--[[
  heartbeat: renew the lease on jobs a worker holds (running or prefetched), so
  no reclaimer takes them while the worker is alive.

  XCLAIM to the same consumer with min-idle 0 and JUSTID resets the idle time
  without raising the delivery count. XCLAIM would also take an entry from
  another consumer, so each entry's owner is checked first: a lease that was
  lost stays lost. allow-oom: it adds no data.

  KEYS[1]    stats hash          (not written)
  KEYS[2..5] streams             critical, high, medium, low
  ARGV[1]    group
  ARGV[2]    consumer
  ARGV[3..]  pairs               priority index (1..4), entry id

  Returns    {OK, lost}          lost: the entry ids this consumer no longer
                                 owns; every other lease was renewed
]]
local group, consumer = ARGV[1], ARGV[2]
local OK = 0
local owned = { {}, {}, {}, {} }
local lost = {}
for i = 3, #ARGV, 2 do
  local p, id = tonumber(ARGV[i]), ARGV[i + 1]
  local pending = redis.call('XPENDING', KEYS[1 + p], group, id, id, 1)
  if pending[1] and pending[1][2] == consumer then
    table.insert(owned[p], id)
  else
    lost[#lost + 1] = id
  end
end
for p = 1, 4 do
  if #owned[p] > 0 then
    redis.call('XCLAIM', KEYS[1 + p], group, consumer, 0, unpack(owned[p]), 'JUSTID')
  end
end
return { OK, lost }
