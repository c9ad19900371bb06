#!lua
--[[
  schedule_remove: delete a schedule, atomically: its definition, its due
  time, and a change entry that wakes every scheduler. A scheduler that read
  the schedule before finds its tick stale and enqueues nothing.

  No flags: a full Redis refuses the call before any write.

  KEYS[1]    stats hash          (not written)
  KEYS[2..5] streams             critical, high, medium, low
  KEYS[6]    schedules hash      schedule id -> definition
  KEYS[7]    due zset            schedule id -> next due, Unix ms
  KEYS[8]    changes stream      one entry per change ("id"), capped
  ARGV[1]    schedule id
  ARGV[2]    changes cap         approximate length the changes stream keeps

  Returns    {OK, removed}       removed: 1 when the schedule existed, else 0
]]
local schedules, due_set, changes = KEYS[6], KEYS[7], KEYS[8]
local id, cap = ARGV[1], tonumber(ARGV[2])
local OK = 0

local removed = redis.call('HDEL', schedules, id)
redis.call('ZREM', due_set, id)
if removed == 1 then
  redis.call('XADD', changes, 'MAXLEN', '~', cap, '*', 'id', id)
end
return { OK, removed }
