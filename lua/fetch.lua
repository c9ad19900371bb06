#!lua flags=allow-oom
--[[
  fetch: claim up to COUNT new jobs for one consumer, strictly by priority.

  Reads critical first and moves to the next stream only while fewer than COUNT
  jobs were found, so a lower-priority job is never claimed while a higher one is
  waiting. allow-oom: XREADGROUP adds no data, and workers must keep draining
  (and so freeing memory) when Redis is full.

  Rate limit (optional, a fixed window): at most MAX claims per window of
  PERIOD ms, windows aligned to multiples of PERIOD on the `now` clock. The
  claims and the count they spend are one step, so workers in any number of
  processes share the limit exactly. A caller whose `now` is older than the
  window already open (it read its clock, then waited to run; or its clock
  lags) claims nothing until its clock reaches that window: counting it
  against its older window would start that window over.

  KEYS[1]    stats hash          (not written)
  KEYS[2..5] streams             critical, high, medium, low
  KEYS[6]    pause flag          while it exists, nothing is claimed
  KEYS[7]    rate window hash    "w": window index, "n": claims in it
                                 (expires after two periods)
  ARGV[1]    group
  ARGV[2]    consumer
  ARGV[3]    count               the most jobs to claim, >= 1
  ARGV[4]    max                 claims allowed per window; 0 = no limit
  ARGV[5]    period              window length, ms, >= 1 (ignored when max is 0)
  ARGV[6]    now                 Unix ms
  ARGV[7]    ids (optional)      "0": the caller waits by claiming in a
                                 blocking XREADGROUP and needs no last
                                 delivered ids; absent or "1": return them

  Returns    {OK, jobs, last}    jobs: triples of priority index (1..4),
                                 entry id, envelope bytes (false when the
                                 entry has no "e" field: not ours, poison).
                                 last: when fewer than COUNT jobs were found
                                 (every stream read to its end), the group's
                                 last delivered id per stream (four), so the
                                 caller can block for anything newer without
                                 a race and without fetching again, or {0}
                                 when ARGV[7] is "0"; empty when COUNT jobs
                                 were found
             {PAUSED}            the queue is paused; nothing was claimed
             {RATE_LIMITED, wait}
                                 the window's claims are spent, or `now` is
                                 behind the open window; nothing was
                                 claimed; try again in wait ms
]]
local group = ARGV[1]
local consumer = ARGV[2]
local wanted = tonumber(ARGV[3])
local max, period, now = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local want_ids = ARGV[7] ~= '0'

local OK, PAUSED, RATE_LIMITED = 0, 2, 3
local paused, rate = KEYS[6], KEYS[7]

if redis.call('EXISTS', paused) == 1 then
  return { PAUSED }
end

local window, spent = 0, 0
if max > 0 then
  window = math.floor(now / period)
  local state = redis.call('HMGET', rate, 'w', 'n')
  local open = tonumber(state[1])
  if open and open > window then
    return { RATE_LIMITED, open * period - now }
  end
  if open == window then spent = tonumber(state[2]) or 0 end
  if spent >= max then
    return { RATE_LIMITED, (window + 1) * period - now }
  end
  wanted = math.min(wanted, max - spent)
end

local jobs = {}
local found = 0
-- The last entry claimed per stream: its group's last delivered id now.
local claimed_last = {}
for p = 1, 4 do
  local res = redis.call('XREADGROUP', 'GROUP', group, consumer,
                         'COUNT', wanted - found, 'STREAMS', KEYS[1 + p], '>')
  if res then
    for _, entry in ipairs(res[1][2]) do
      local fields = entry[2]
      local envelope = false
      for f = 1, #fields, 2 do
        if fields[f] == 'e' then envelope = fields[f + 1] end
      end
      jobs[#jobs + 1] = p
      jobs[#jobs + 1] = entry[1]
      jobs[#jobs + 1] = envelope
      found = found + 1
      claimed_last[p] = entry[1]
    end
  end
  if found >= wanted then break end
end

if found > 0 and max > 0 then
  redis.call('HSET', rate, 'w', window, 'n', spent + found)
  redis.call('PEXPIRE', rate, 2 * period)
end
if found >= wanted then
  return { OK, jobs, {} }
end
if not want_ids then
  return { OK, jobs, { 0 } }
end

-- Where the caller's blocking XREAD starts, per stream: the last entry
-- claimed there (the group's last delivered id now), else the group's last
-- delivered id as XINFO GROUPS reports it. (XREVRANGE of the newest entry
-- would also do, but converting a 1 KiB entry to Lua costs more than this.)
local last_ids = {}
for p = 1, 4 do
  local last = claimed_last[p]
  if not last then
    last = '0-0'
    for _, info in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1 + p])) do
      local name, delivered
      for f = 1, #info, 2 do
        if info[f] == 'name' then name = info[f + 1] end
        if info[f] == 'last-delivered-id' then delivered = info[f + 1] end
      end
      if name == group then last = delivered end
    end
  end
  last_ids[p] = last
end
return { OK, jobs, last_ids }
