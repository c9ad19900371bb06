#!lua
--[[
  recover: put jobs stalled in one priority stream back in line now, instead
  of waiting for a worker's reclaimer: each pending entry idle for at least
  MIN_IDLE is added again as a new waiting entry and the stalled one is
  acknowledged and deleted, in one step. Any live worker picks them up at
  once. If a stalled worker was in fact alive, its late finish is refused
  (the entry is no longer pending): the job may run twice, never zero times.

  No flags: a full Redis refuses the call before any write.

  KEYS[1]    stats hash          HINCRBY "reclaimed:<p>", "lost:<p>"
  KEYS[2..5] streams             critical, high, medium, low
  ARGV[1]    group
  ARGV[2]    priority index      1..4: the stream to recover
  ARGV[3]    min idle            ms an entry must have been idle
  ARGV[4]    count               the most entries to recover in this call

  Returns    {OK, recovered, lost, scanned}
                                 lost: entries Redis had deleted while
                                 pending (their pending record is cleared);
                                 scanned < count: nothing more to recover
]]
local stats = KEYS[1]
local group, p, min_idle, count = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local stream = KEYS[1 + p]
local names = { 'critical', 'high', 'medium', 'low' }
local priority = names[p]
local OK = 0

local stalled = redis.call('XPENDING', stream, group, 'IDLE', min_idle, '-', '+', count)
local recovered, lost = 0, 0
for _, pending in ipairs(stalled) do
  local id = pending[1]
  local entry = redis.call('XRANGE', stream, id, id)[1]
  if entry then
    redis.call('XADD', stream, '*', unpack(entry[2]))
    redis.call('XACK', stream, group, id)
    redis.call('XDEL', stream, id)
    recovered = recovered + 1
  else
    redis.call('XACK', stream, group, id)
    lost = lost + 1
  end
end
if recovered > 0 then redis.call('HINCRBY', stats, 'reclaimed:' .. priority, recovered) end
if lost > 0 then redis.call('HINCRBY', stats, 'lost:' .. priority, lost) end
return { OK, recovered, lost, #stalled }
