#!lua flags=allow-oom
--[[
  reclaim: take over jobs whose lease ran out (their worker died or hung), with
  their delivery counts, and count the ones Redis deleted while pending.

  The caller decides what to run and what to dead-letter (too many deliveries);
  dead-lettering is its own script, refused when Redis is full, so this one
  writes no data and may run under OOM (allow-oom).

  KEYS[1]    stats hash          HINCRBY "reclaimed:<p>", "lost:<p>" (best effort)
  KEYS[2]    stream              one priority stream
  ARGV[1]    group
  ARGV[2]    consumer            who takes the jobs
  ARGV[3]    min idle            ms an entry must have been idle: the lease
  ARGV[4]    cursor              XAUTOCLAIM start id; 0-0 for a new scan
  ARGV[5]    count               the most entries to claim
  ARGV[6]    priority name       for the counters

  Returns    {cursor, n, id, envelope, deliveries, ..., deleted id...}
                                 the next cursor (0-0: scan complete), n claimed
                                 jobs as triples (envelope false when the entry
                                 has no "e" field), then the ids Redis had
                                 deleted while they were pending (lost)
]]
local stats, stream = KEYS[1], KEYS[2]
local group, consumer, min_idle = ARGV[1], ARGV[2], ARGV[3]
local cursor, count, priority = ARGV[4], ARGV[5], ARGV[6]

-- An empty pending list costs one cheap summary, not a scan.
local summary = redis.call('XPENDING', stream, group)
if summary[1] == 0 then
  return { '0-0', 0 }
end

local res = redis.call('XAUTOCLAIM', stream, group, consumer, min_idle, cursor, 'COUNT', count)
local reply = { res[1], 0 }
for _, entry in ipairs(res[2]) do
  local id, fields = entry[1], entry[2]
  local envelope = false
  if fields then
    for f = 1, #fields, 2 do
      if fields[f] == 'e' then envelope = fields[f + 1] end
    end
  end
  local pending = redis.call('XPENDING', stream, group, id, id, 1)
  local deliveries = pending[1] and pending[1][4] or 1
  reply[#reply + 1] = id
  reply[#reply + 1] = envelope
  reply[#reply + 1] = deliveries
  reply[2] = reply[2] + 1
end
local deleted = res[3] or {}
for _, id in ipairs(deleted) do
  reply[#reply + 1] = id
end
if reply[2] > 0 then
  redis.pcall('HINCRBY', stats, 'reclaimed:' .. priority, reply[2])
end
if #deleted > 0 then
  redis.pcall('HINCRBY', stats, 'lost:' .. priority, #deleted)
end
return reply
