#!lua flags=allow-oom
--[[
  heartbeat: renew the lease on jobs a worker holds (running or prefetched), so
  no reclaimer takes them while the worker is alive.

  XCLAIM to the same consumer with min-idle 0 and JUSTID resets the idle time
  without raising the delivery count. XCLAIM would also take an entry from
  another consumer, so each entry's owner is checked first: a lease that was
  lost stays lost. allow-oom: it adds no data.

  It also reports which renewed entries have a stop request (`cancel`), so
  a worker learns of cancels on the beat it already runs: the heartbeat
  interval is how long a stop request takes to be seen.

  KEYS[1]    stats hash          (not written)
  KEYS[2..5] streams             critical, high, medium, low
  KEYS[6]    stop requests zset  member = priority index .. ":" .. entry id
                                 (read only)
  ARGV[1]    group
  ARGV[2]    consumer
  ARGV[3..]  pairs               priority index (1..4), entry id

  Returns    {OK, lost, stop}    lost: the entry ids this consumer no longer
                                 owns; every other lease was renewed;
                                 stop: renewed entries asked to stop, each
                                 as its stop request's member ("p:id":
                                 entry ids repeat across priorities)
]]
local stops = KEYS[6]
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
-- Lua expands unpack() to every value only as the last argument: in the
-- middle of a call it gives the first id alone.
for p = 1, 4 do
  if #owned[p] > 0 then
    local args = { KEYS[1 + p], group, consumer, 0 }
    for _, id in ipairs(owned[p]) do args[#args + 1] = id end
    args[#args + 1] = 'JUSTID'
    redis.call('XCLAIM', unpack(args))
  end
end
local stop = {}
if redis.call('EXISTS', stops) == 1 then
  for p = 1, 4 do
    for _, id in ipairs(owned[p]) do
      local member = p .. ':' .. id
      if redis.call('ZSCORE', stops, member) then stop[#stop + 1] = member end
    end
  end
end
return { OK, lost, stop }
