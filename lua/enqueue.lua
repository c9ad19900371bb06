#!lua
--[[
  enqueue: add jobs to a queue, now or later, once per idempotency key, and
  count them, atomically.

  No flags: under maxmemory + noeviction Redis refuses the whole call before the
  first write, so a batch is all-or-nothing and an OOM reply means nothing was
  added.

  KEYS[1]    stats hash          HINCRBY "enqueued:<p>", "scheduled", "deduplicated"
  KEYS[2..5] streams             critical, high, medium, low
  KEYS[6]    delayed zset        member = priority digit .. envelope, score = due ms
  KEYS[7..]  idempotency keys    strings holding the id of the job that took them
  ARGV[1]    max backlog         jobs in the streams plus delayed beyond which the
                                 batch is refused; 0 = no bound
  ARGV[2]    now                 Unix ms
  ARGV[3..]  six per job:        priority index (1 = critical .. 4 = low),
                                 due (Unix ms; 0 = now),
                                 idempotency key index into KEYS (0 = none),
                                 idempotency ttl (ms),
                                 job id,
                                 envelope bytes (opaque, never decoded here)

  Returns    {0, i, id, ...}     added; for each duplicate (its idempotency key
                                 was taken), its 1-based position in the call
                                 and the id of the job holding the key
             {1, backlog}        refused: the backlog would exceed ARGV[1];
                                 nothing was written
]]
local stats, delayed = KEYS[1], KEYS[6]
local max_backlog = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local names = { 'critical', 'high', 'medium', 'low' }

local jobs = (#ARGV - 2) / 6
if max_backlog > 0 then
  local backlog = redis.call('ZCARD', delayed)
  for p = 1, 4 do
    backlog = backlog + redis.call('XLEN', KEYS[1 + p])
  end
  if backlog + jobs > max_backlog then
    return { 1, backlog }
  end
end

local added = { 0, 0, 0, 0 }
local scheduled, duplicates = 0, 0
local reply = { 0 }
for i = 3, #ARGV, 6 do
  local p, due = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local key_index, ttl = tonumber(ARGV[i + 2]), ARGV[i + 3]
  local job_id, envelope = ARGV[i + 4], ARGV[i + 5]
  local holder = false
  if key_index > 0 then
    holder = redis.call('GET', KEYS[key_index])
  end
  if holder then
    reply[#reply + 1] = (i - 3) / 6 + 1
    reply[#reply + 1] = holder
    duplicates = duplicates + 1
  else
    if key_index > 0 then
      redis.call('SET', KEYS[key_index], job_id, 'PX', ttl)
    end
    if due > now then
      redis.call('ZADD', delayed, due, p .. envelope)
      scheduled = scheduled + 1
    else
      redis.call('XADD', KEYS[1 + p], '*', 'e', envelope)
    end
    added[p] = added[p] + 1
  end
end
for p = 1, 4 do
  if added[p] > 0 then
    redis.call('HINCRBY', stats, 'enqueued:' .. names[p], added[p])
  end
end
if scheduled > 0 then redis.call('HINCRBY', stats, 'scheduled', scheduled) end
if duplicates > 0 then redis.call('HINCRBY', stats, 'deduplicated', duplicates) end
return reply
