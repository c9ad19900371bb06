#!lua
--[[
  flow_add: create a flow atomically: the parent's record (its envelope,
  waiting outside the streams) and every child in its stream, so no child
  exists without its parent's record, nor a record without its children.
  Each child is enqueued as enqueue would: counted, tracked and announced
  (event) as its queue says, and refused with the whole flow when its
  queue's backlog bound would be passed.

  No flags: under maxmemory + noeviction Redis refuses the whole call before
  the first write, so a flow is all or nothing.

  The children may be on other queues of the same prefix: their keys then
  carry other hash tags, which a single Redis accepts and Redis Cluster only
  when every queue of the flow maps to one slot (CROSSSLOT otherwise).

  KEYS[1]    stats hash          the parent's queue: HINCRBY "waiting_children"
  KEYS[2..5] streams             critical, high, medium, low: the parent's
                                 queue (unused here)
  KEYS[6]    flow hash           the parent's record (a new id: never exists)
  KEYS[7..]  per child queue     seven keys from the index ARGV names: its
                                 stats hash (HINCRBY "enqueued:<p>",
                                 "flow_children", which tells a drain to look
                                 for flow children, "name:enqueued:<name>"),
                                 its four streams, its delayed zset (read for
                                 the backlog), its events stream
             then live hashes    of the child queues that track jobs: HSET
                                 child id -> "<priority index> <entry id>
                                 <name>" (see ARGV)
  ARGV[1]    now                 Unix ms
  ARGV[2]    parent priority     index 1..4: the stream it is released into
  ARGV[3]    parent job id
  ARGV[4]    parent job name
  ARGV[5]    parent envelope     bytes (opaque)
  ARGV[6]    retention           ms the record lives once the parent was
                                 released or failed
  ARGV[7]    child queues        how many; then six per child queue:
                                 index into KEYS of its seven keys,
                                 max backlog (0 = no bound),
                                 events cap (approximate MAXLEN; 0 = none),
                                 tracking (1 = tracked; 0 = not),
                                 per-name counters (1 = kept),
                                 children the flow adds to it
  ARGV[..]   six per child:      child queue (1-based, in the order above),
                                 priority index (1..4), job id, job name,
                                 its queue's live hash index into KEYS
                                 (0 = untracked), envelope bytes

  Returns    {OK}                created
             {QUEUE_FULL, backlog, limit}
                                 refused: a child queue's backlog would
                                 exceed its bound; nothing was written
]]
local stats, flow = KEYS[1], KEYS[6]
local now, parent_p = ARGV[1], ARGV[2]
local parent_id, parent_name = ARGV[3], ARGV[4]
local parent_envelope, retention = ARGV[5], ARGV[6]
local names = { 'critical', 'high', 'medium', 'low' }
local OK, QUEUE_FULL = 0, 1

local queues = {}
local QFIRST, QSTRIDE = 8, 6
for q = 1, tonumber(ARGV[7]) do
  local at = QFIRST + (q - 1) * QSTRIDE
  queues[q] = {
    keys = tonumber(ARGV[at]), max_backlog = tonumber(ARGV[at + 1]),
    events_cap = tonumber(ARGV[at + 2]), tracking = ARGV[at + 3] ~= '0',
    by_name = ARGV[at + 4] == '1', adding = tonumber(ARGV[at + 5]),
  }
end
local FIRST, STRIDE = QFIRST + #queues * QSTRIDE, 6

-- Every bound before the first write: a flow is all or nothing.
for _, queue in ipairs(queues) do
  if queue.max_backlog > 0 then
    local k = queue.keys
    local backlog = redis.call('ZCARD', KEYS[k + 5])
    for p = 1, 4 do
      backlog = backlog + redis.call('XLEN', KEYS[k + p])
    end
    if backlog + queue.adding > queue.max_backlog then
      return { QUEUE_FULL, backlog, queue.max_backlog }
    end
  end
end

local children = (#ARGV - FIRST + 1) / STRIDE
redis.call('HSET', flow, 'id', parent_id, 'name', parent_name, 'p', parent_p,
           'e', parent_envelope, 'state', 'waiting', 'total', children,
           'pending', children, 'created', now, 'ttl', retention)
for i = FIRST, #ARGV, STRIDE do
  local queue, p = queues[tonumber(ARGV[i])], tonumber(ARGV[i + 1])
  local job_id, name = ARGV[i + 2], ARGV[i + 3]
  local live_index, envelope = tonumber(ARGV[i + 4]), ARGV[i + 5]
  local k = queue.keys
  local entry = redis.call('XADD', KEYS[k + p], '*', 'e', envelope)
  redis.call('HINCRBY', KEYS[k], 'enqueued:' .. names[p], 1)
  redis.call('HINCRBY', KEYS[k], 'flow_children', 1)
  if queue.by_name then
    redis.call('HINCRBY', KEYS[k], 'name:enqueued:' .. name, 1)
  end
  if live_index > 0 and queue.tracking then
    redis.call('HSET', KEYS[live_index], job_id, p .. ' ' .. entry .. ' ' .. name)
  end
  if queue.events_cap > 0 then
    redis.call('XADD', KEYS[k + 6], 'MAXLEN', '~', queue.events_cap, '*', 'ev', 'enqueued',
               'job', job_id, 'name', name, 'p', names[p], 'at', now, 'due', 0)
  end
end
redis.call('HINCRBY', stats, 'waiting_children', 1)
return { OK }
