#!lua
--[[
  promote: move delayed jobs that are due into their priority streams.

  Atomic, so workers promoting at the same time never move a job twice: each
  member is added to its stream and removed from the set in one step. No
  flags: a full Redis refuses the call before any write, and nothing moves.

  KEYS[1]    stats hash          (not written)
  KEYS[2..5] streams             critical, high, medium, low
  KEYS[6]    delayed zset        member = priority digit .. envelope
  ARGV[1]    now                 Unix ms
  ARGV[2]    limit               the most jobs to move in this call

  Returns    {OK, moved, next due}
                                 next due: Unix ms of the earliest job still
                                 delayed, or -1 when none is
]]
local delayed = KEYS[6]
local now, limit = ARGV[1], tonumber(ARGV[2])
local OK = 0

local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, limit)
for _, member in ipairs(due) do
  local p = tonumber(string.sub(member, 1, 1))
  redis.call('XADD', KEYS[1 + p], '*', 'e', string.sub(member, 2))
  redis.call('ZREM', delayed, member)
end

local next_due = -1
local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
if first[2] then next_due = tonumber(first[2]) end
return { OK, #due, next_due }
