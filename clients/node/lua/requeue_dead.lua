#!lua
--[[
  requeue_dead: move dead letters back into their priority streams, atomically
  per letter: added to the stream, then removed from the dead letters. A letter
  already gone (requeued or purged by someone else) is skipped, so two
  operators requeueing at once cannot double a job.

  No flags: a full Redis refuses the call before any write.

  KEYS[1]    stats hash          HINCRBY "requeued:<p>"
  KEYS[2..5] streams             critical, high, medium, low
  KEYS[6]    dead-letter stream
  ARGV[1..]  triples             dead-letter entry id, priority index (1..4),
                                 envelope to enqueue (attempts reset by the
                                 caller; scripts never decode envelopes)

  Returns    {OK, requeued, missing}
                                 missing: the dead-letter ids that were not
                                 there (requeued or purged by someone else)
]]
local stats, dead = KEYS[1], KEYS[6]
local names = { 'critical', 'high', 'medium', 'low' }
local OK = 0
local requeued, missing = 0, {}
for i = 1, #ARGV, 3 do
  local id, p, envelope = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  if redis.call('XRANGE', dead, id, id)[1] then
    redis.call('XADD', KEYS[1 + p], '*', 'e', envelope)
    redis.call('XDEL', dead, id)
    redis.call('HINCRBY', stats, 'requeued:' .. names[p], 1)
    requeued = requeued + 1
  else
    missing[#missing + 1] = id
  end
end
return { OK, requeued, missing }
