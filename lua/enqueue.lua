#!lua
--[[
  enqueue: add jobs to a queue's priority streams and count them, atomically.

  No flags: under maxmemory + noeviction Redis refuses the whole call before the
  first XADD, so a batch is all-or-nothing and an OOM reply means nothing was added.

  KEYS[1]    stats hash          counters, HINCRBY "enqueued:<priority>"
  KEYS[2..5] streams             critical, high, medium, low
  ARGV[1]    max backlog         jobs waiting + in flight over all four streams
                                 beyond which the batch is refused; 0 = no bound
  ARGV[2..]  pairs               priority index (1 = critical .. 4 = low),
                                 envelope bytes (opaque, never decoded here)

  Returns    {0, entry id...}    one stream entry id per job, in input order
             {1, backlog}        refused: the backlog would exceed ARGV[1];
                                 nothing was written
]]
local stats = KEYS[1]
local max_backlog = tonumber(ARGV[1])
local names = { 'critical', 'high', 'medium', 'low' }

local jobs = (#ARGV - 1) / 2
if max_backlog > 0 then
  local backlog = 0
  for p = 1, 4 do
    backlog = backlog + redis.call('XLEN', KEYS[1 + p])
  end
  if backlog + jobs > max_backlog then
    return { 1, backlog }
  end
end

local added = { 0, 0, 0, 0 }
local reply = { 0 }
for i = 2, #ARGV, 2 do
  local p = tonumber(ARGV[i])
  reply[#reply + 1] = redis.call('XADD', KEYS[1 + p], '*', 'e', ARGV[i + 1])
  added[p] = added[p] + 1
end
for p = 1, 4 do
  if added[p] > 0 then
    redis.call('HINCRBY', stats, 'enqueued:' .. names[p], added[p])
  end
end
return reply
