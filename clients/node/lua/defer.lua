#!lua
--[[
  defer: put a claimed job back in the delayed set until a given time without
  spending an attempt (its handler reported that a downstream rate-limited
  it), atomically: fenced, the envelope into the delayed set, XACK and XDEL
  of the entry, a counter.

  No flags: when Redis is out of memory the whole call is refused before any
  write; the job stays pending with its owner and the worker tries again.

  KEYS[1]    stats hash          HINCRBY "rate_limited:<p>"
  KEYS[2..5] streams             critical, high, medium, low
  KEYS[6]    delayed zset        member = priority digit .. envelope
  ARGV[1]    group
  ARGV[2]    consumer            the owner the entry must still have
  ARGV[3]    entry id
  ARGV[4]    priority index      1..4
  ARGV[5]    due                 Unix ms when the job may run again
  ARGV[6]    envelope            with the attempt count of the claimed job

  Returns    {OK, lost}          lost: {} when moved; {entry id} when the
                                 consumer no longer owns the entry
]]
local delayed = KEYS[6]
local group, consumer, id = ARGV[1], ARGV[2], ARGV[3]
local p, due, envelope = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local stream = KEYS[1 + p]
local names = { 'critical', 'high', 'medium', 'low' }
local OK = 0

local pending = redis.call('XPENDING', stream, group, id, id, 1)
if not (pending[1] and pending[1][2] == consumer) then
  return { OK, { id } }
end

redis.call('ZADD', delayed, due, p .. envelope)
redis.call('XACK', stream, group, id)
redis.call('XDEL', stream, id)
redis.call('HINCRBY', KEYS[1], 'rate_limited:' .. names[p], 1)
return { OK, {} }
