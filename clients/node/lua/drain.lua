#!lua flags=allow-oom
--[[
  drain: remove waiting jobs (stream entries no worker was ever given) and
  delayed jobs, a chunk per call; never an active one.

  Entries newer than the group's last-delivered id were never delivered, so
  none of them is pending; as a second guard the start is also moved past
  the newest pending id. Each stream is drained only up to the id given
  (its last entry when the drain began), so jobs enqueued meanwhile stay.
  Delayed members are never active (a job leaves the set to run).
  allow-oom: it only deletes (and counts, through pcall), and draining is
  what frees memory.

  KEYS[1]    stats hash          HINCRBY "drained:<p>"
  KEYS[2..5] streams             critical, high, medium, low
  KEYS[6]    delayed zset        member = priority digit .. envelope
  ARGV[1]    group
  ARGV[2]    count               the most stream entries to remove
  ARGV[3..6] up to               per priority, the newest entry id to remove
                                 ("0-0": none)
  ARGV[7]    delayed count       the most delayed jobs to remove
  ARGV[8]    return envelopes    optional: "1" = the reply also carries the
                                 removed jobs' envelopes, so that the caller
                                 (which decodes them; this script never
                                 does) can clear their tracking records

  Returns    {OK, waiting, delayed, envelopes}
                                 waiting: entries removed per priority (an
                                 array of four); delayed: members removed.
                                 Fewer than asked: nothing more within
                                 bounds. envelopes: with ARGV[8] = "1", the
                                 removed jobs' envelopes, else empty
]]
local stats, delayed = KEYS[1], KEYS[6]
local group, count, delayed_count = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[7])
local with_envelopes = ARGV[8] == '1'
local envelopes = {}
local names = { 'critical', 'high', 'medium', 'low' }
local OK = 0

local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function newer(a, b)
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  return ams > bms or (ams == bms and aseq > bseq)
end

-- Validate before the first write: every bound is an entry id.
for p = 1, 4 do
  if not parse(ARGV[2 + p]) then
    return redis.error_reply('ERR drain: bad entry id ' .. ARGV[2 + p])
  end
end

-- Where undelivered entries start in each stream.
local starts = {}
for p = 1, 4 do
  local stream = KEYS[1 + p]
  local start = '0-0'
  local groups = redis.pcall('XINFO', 'GROUPS', stream)
  if type(groups) == 'table' and not groups.err then
    for _, g in ipairs(groups) do
      local name, last
      for i = 1, #g, 2 do
        if g[i] == 'name' then name = g[i + 1] end
        if g[i] == 'last-delivered-id' then last = g[i + 1] end
      end
      if name == group and last then
        start = last
        local summary = redis.call('XPENDING', stream, group)
        if summary[1] > 0 and newer(summary[3], start) then start = summary[3] end
      end
    end
  end
  starts[p] = start
end

local waiting, left = { 0, 0, 0, 0 }, count
for p = 1, 4 do
  local upto = ARGV[2 + p]
  if left > 0 and upto ~= '0-0' and newer(upto, starts[p]) then
    local entries = redis.call('XRANGE', KEYS[1 + p], '(' .. starts[p], upto, 'COUNT', left)
    if #entries > 0 then
      local ids = {}
      for i, entry in ipairs(entries) do
        ids[i] = entry[1]
        if with_envelopes then
          local fields = entry[2]
          for f = 1, #fields, 2 do
            if fields[f] == 'e' then envelopes[#envelopes + 1] = fields[f + 1] end
          end
        end
      end
      waiting[p] = redis.call('XDEL', KEYS[1 + p], unpack(ids))
      left = left - #entries
    end
  end
end

local removed_delayed = 0
local counts = { 0, 0, 0, 0 }
if delayed_count > 0 then
  local members = redis.call('ZRANGE', delayed, 0, delayed_count - 1)
  if #members > 0 then
    removed_delayed = redis.call('ZREM', delayed, unpack(members))
    for _, member in ipairs(members) do
      local p = tonumber(string.sub(member, 1, 1))
      if p and names[p] then counts[p] = counts[p] + 1 end
      if with_envelopes then envelopes[#envelopes + 1] = string.sub(member, 2) end
    end
  end
end

for p = 1, 4 do
  local n = waiting[p] + counts[p]
  if n > 0 then redis.pcall('HINCRBY', stats, 'drained:' .. names[p], n) end
end
return { OK, waiting, removed_delayed, envelopes }
