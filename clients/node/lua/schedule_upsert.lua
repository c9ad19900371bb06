#!lua
--[[
  schedule_upsert: add a schedule or change one, atomically: its definition,
  its next due time, and a change entry that wakes every scheduler. Writing
  the very same definition again changes nothing (its due time stays), so
  every process of an application may upsert its schedules at start.

  No flags: a full Redis refuses the call before any write.

  KEYS[1]    stats hash          (not written)
  KEYS[2..5] streams             critical, high, medium, low
  KEYS[6]    schedules hash      schedule id -> definition (MessagePack)
  KEYS[7]    due zset            schedule id -> next due, Unix ms
  KEYS[8]    changes stream      one entry per change ("id"), capped
  ARGV[1]    schedule id
  ARGV[2]    definition          bytes (opaque, never decoded here)
  ARGV[3]    first due           Unix ms of the first tick
  ARGV[4]    changes cap         approximate length the changes stream keeps

  Returns    {OK, change, due}   change: 0 unchanged, 1 created, 2 updated;
                                 due: the schedule's next due time, Unix ms
]]
local schedules, due_set, changes = KEYS[6], KEYS[7], KEYS[8]
local id, definition, first_due = ARGV[1], ARGV[2], tonumber(ARGV[3])
local cap = tonumber(ARGV[4])
local OK = 0

local old = redis.call('HGET', schedules, id)
local due = redis.call('ZSCORE', due_set, id)
if old == definition and due then
  return { OK, 0, tonumber(due) }
end

redis.call('HSET', schedules, id, definition)
redis.call('ZADD', due_set, first_due, id)
redis.call('XADD', changes, 'MAXLEN', '~', cap, '*', 'id', id)
local change = 2
if not old then change = 1 end
return { OK, change, first_due }
