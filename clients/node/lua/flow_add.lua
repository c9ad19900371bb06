#!lua
--[[
  flow_add: create a flow atomically: the parent's record (its envelope,
  waiting outside the streams) and every child in its stream, so no child
  exists without its parent's record, nor a record without its children.

  No flags: under maxmemory + noeviction Redis refuses the whole call before
  the first write, so a flow is all or nothing.

  The children may be on other queues of the same prefix: their keys then
  carry other hash tags, which a single Redis accepts and Redis Cluster only
  when every queue of the flow maps to one slot (CROSSSLOT otherwise).

  KEYS[1]    stats hash          the parent's queue: HINCRBY "waiting_children"
  KEYS[2..5] streams             critical, high, medium, low: the parent's
                                 queue (unused here)
  KEYS[6]    flow hash           the parent's record (a new id: never exists)
  KEYS[7..]  child keys          per child: its stream, its queue's stats hash
                                 (HINCRBY "enqueued:<p>" and "flow_children",
                                 which tells a drain to look for flow
                                 children), at the indexes given in ARGV
  ARGV[1]    now                 Unix ms
  ARGV[2]    parent priority     index 1..4: the stream it is released into
  ARGV[3]    parent job id
  ARGV[4]    parent job name
  ARGV[5]    parent envelope     bytes (opaque)
  ARGV[6]    retention           ms the record lives once the parent was
                                 released or failed
  ARGV[7..]  four per child:     stream key index into KEYS, stats key index
                                 into KEYS, priority index (1..4), envelope bytes

  Returns    {OK}                created
]]
local stats, flow = KEYS[1], KEYS[6]
local now, parent_p = ARGV[1], ARGV[2]
local parent_id, parent_name = ARGV[3], ARGV[4]
local parent_envelope, retention = ARGV[5], ARGV[6]
local names = { 'critical', 'high', 'medium', 'low' }
local FIRST, STRIDE = 7, 4
local OK = 0

local children = (#ARGV - FIRST + 1) / STRIDE
redis.call('HSET', flow, 'id', parent_id, 'name', parent_name, 'p', parent_p,
           'e', parent_envelope, 'state', 'waiting', 'total', children,
           'pending', children, 'created', now, 'ttl', retention)
for i = FIRST, #ARGV, STRIDE do
  local stream, child_stats = KEYS[tonumber(ARGV[i])], KEYS[tonumber(ARGV[i + 1])]
  local p = tonumber(ARGV[i + 2])
  redis.call('XADD', stream, '*', 'e', ARGV[i + 3])
  redis.call('HINCRBY', child_stats, 'enqueued:' .. names[p], 1)
  redis.call('HINCRBY', child_stats, 'flow_children', 1)
end
redis.call('HINCRBY', stats, 'waiting_children', 1)
return { OK }
