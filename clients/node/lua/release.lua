#!lua
--[[
  release: hand jobs back to the queue at once, for a worker that claimed
  them but will not finish them (it is shutting down). Each entry the caller
  still owns is added again at the end of its stream as a new waiting entry
  with the same fields, then acknowledged and deleted, in one step: any worker
  can fetch it right away instead of waiting for its lease to run out. Its
  attempt count (in the envelope) is unchanged; its delivery count starts
  over. An entry Redis had deleted while pending is acknowledged and counted
  as lost.

  No flags: when Redis is out of memory the call is refused before any write
  and the entries stay pending, to be reclaimed after their lease.

  KEYS[1]    stats hash          HINCRBY "released:<p>", "lost:<p>"
  KEYS[2..5] streams             critical, high, medium, low
  ARGV[1]    group
  ARGV[2]    consumer            the owner the entries must still have
  ARGV[3..]  pairs               priority index (1..4), entry id

  Returns    {OK, lost}          lost: the entry ids this consumer no longer
                                 owns (reclaimed by another worker), left as
                                 they are; every other entry was handed back
]]
local stats = KEYS[1]
local group, consumer = ARGV[1], ARGV[2]
local names = { 'critical', 'high', 'medium', 'low' }
local OK = 0

local owned, lost = {}, {}
for i = 3, #ARGV, 2 do
  local p, id = tonumber(ARGV[i]), ARGV[i + 1]
  local pending = redis.call('XPENDING', KEYS[1 + p], group, id, id, 1)
  if pending[1] and pending[1][2] == consumer then
    owned[#owned + 1] = { p, id }
  else
    lost[#lost + 1] = id
  end
end

local released, deleted = { 0, 0, 0, 0 }, { 0, 0, 0, 0 }
for _, job in ipairs(owned) do
  local p, id = job[1], job[2]
  local stream = KEYS[1 + p]
  local entry = redis.call('XRANGE', stream, id, id)[1]
  if entry then
    redis.call('XADD', stream, '*', unpack(entry[2]))
    redis.call('XDEL', stream, id)
    released[p] = released[p] + 1
  else
    deleted[p] = deleted[p] + 1
  end
  redis.call('XACK', stream, group, id)
end
for p = 1, 4 do
  if released[p] > 0 then redis.pcall('HINCRBY', stats, 'released:' .. names[p], released[p]) end
  if deleted[p] > 0 then redis.pcall('HINCRBY', stats, 'lost:' .. names[p], deleted[p]) end
end
return { OK, lost }
