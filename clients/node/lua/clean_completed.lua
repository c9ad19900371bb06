#!lua flags=allow-oom
--[[
  clean_completed: forget completed jobs that finished before a time: their
  index entry, metadata, log and kept result, for a batch of ids the caller
  read from the index. Each id's finish time is checked again here, so an id
  that was re-indexed meanwhile (a job that ran again) is kept.
  allow-oom: it only deletes.

  KEYS[1]    stats hash          (not written)
  KEYS[2..5] streams             critical, high, medium, low
  KEYS[6]    completed zset      ids of retained completed jobs, by finish ms
  KEYS[7..]  three per id        metadata hash, log list, result string
  ARGV[1]    older than          Unix ms: jobs that finished before it go
  ARGV[2..]  job ids             one per three keys, in order

  Returns    {OK, removed, results}
                                 removed: jobs forgotten; results: kept
                                 results deleted with them
]]
local completed = KEYS[6]
local cutoff = tonumber(ARGV[1])
local OK = 0

local removed, results = 0, 0
for i = 2, #ARGV do
  local id = ARGV[i]
  local base = 7 + (i - 2) * 3
  local finished = redis.call('ZSCORE', completed, id)
  if finished and tonumber(finished) < cutoff then
    redis.call('DEL', KEYS[base], KEYS[base + 1])
    results = results + redis.call('DEL', KEYS[base + 2])
    redis.call('ZREM', completed, id)
    removed = removed + 1
  end
end
return { OK, removed, results }
