#!lua flags=allow-oom
--[[
  reclaim: take over jobs whose lease ran out (their worker died or hung), with
  their delivery counts, and count the ones Redis deleted while pending.

  The caller decides what to run and what to dead-letter (too many deliveries);
  dead-lettering is its own script, refused when Redis is full, so this one
  writes no data and may run under OOM (allow-oom).

  KEYS[1]    stats hash          HINCRBY "reclaimed:<p>", "lost:<p>" (best effort)
  KEYS[2..5] streams             critical, high, medium, low
  ARGV[1]    group
  ARGV[2]    consumer            who takes the jobs
  ARGV[3]    priority index      1..4: the stream to scan
  ARGV[4]    min idle            ms an entry must have been idle: the lease
  ARGV[5]    cursor              XAUTOCLAIM start id; 0-0 for a new scan
  ARGV[6]    count               the most entries to claim

  Returns    {OK, cursor, jobs, deleted}
                                 cursor: the next one (0-0: scan complete);
                                 jobs: triples of entry id, envelope (false
                                 when the entry has no "e" field), deliveries;
                                 deleted: the ids Redis had deleted while they
                                 were pending (lost jobs)
]]
local stats = KEYS[1]
local group, consumer, p = ARGV[1], ARGV[2], tonumber(ARGV[3])
local min_idle, cursor, count = ARGV[4], ARGV[5], ARGV[6]
local stream = KEYS[1 + p]
local names = { 'critical', 'high', 'medium', 'low' }
local priority = names[p]
local OK = 0

-- An empty pending list costs one cheap summary, not a scan.
local summary = redis.call('XPENDING', stream, group)
if summary[1] == 0 then
  return { OK, '0-0', {}, {} }
end

local res = redis.call('XAUTOCLAIM', stream, group, consumer, min_idle, cursor, 'COUNT', count)
local jobs = {}
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
  jobs[#jobs + 1] = id
  jobs[#jobs + 1] = envelope
  jobs[#jobs + 1] = deliveries
end
local deleted = res[3] or {}
if #jobs > 0 then
  redis.pcall('HINCRBY', stats, 'reclaimed:' .. priority, #jobs / 3)
end
if #deleted > 0 then
  redis.pcall('HINCRBY', stats, 'lost:' .. priority, #deleted)
end
return { OK, res[1], jobs, deleted }
