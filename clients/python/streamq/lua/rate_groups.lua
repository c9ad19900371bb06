#!lua
--[[
  rate_groups: apply per-group rate limits to jobs a consumer just claimed:
  each job either spends a token of its group's current window, or goes back
  to the delayed set, due when its group's next free window opens, with its
  envelope (and so its attempt count) unchanged. Fenced and atomic, so
  workers in any number of processes share each group's limit exactly.

  A fixed window per group: at most MAX starts per window of PERIOD ms,
  windows aligned to multiples of PERIOD on the `now` clock. Jobs held back
  in one call reserve later windows in order ("rw", "rn"), so a backlog of
  one group spreads over the windows ahead instead of all returning at once.
  A caller whose `now` is behind a group's open window (it read its clock,
  then waited to run) counts in that open window: counting in its own older
  one would start that window over.

  No flags: when Redis is out of memory the whole call is refused before any
  write; the jobs stay pending with their owner, who tries again.

  KEYS[1]    stats hash          HINCRBY "rate_limited:<p>"
  KEYS[2..5] streams             critical, high, medium, low
  KEYS[6]    delayed zset        member = priority digit .. envelope
  KEYS[7..]  group windows       hashes: "w" window index, "n" starts in it,
                                 "rw"/"rn" the window reserved for held-back
                                 jobs and how many it holds
  ARGV[1]    group               the consumer group
  ARGV[2]    consumer            the owner each entry must still have
  ARGV[3]    now                 Unix ms
  ARGV[4]    max                 starts allowed per group per window, >= 1
  ARGV[5]    period              window length, ms, >= 1
  ARGV[6..]  four per job:       priority index (1..4), entry id,
                                 index into KEYS of its group's window,
                                 envelope bytes (opaque)

  Returns    {OK, lost, deferred}
                                 lost: entry ids the consumer no longer owns
                                 (neither started nor moved); deferred: flat
                                 (entry id, due Unix ms) pairs of the jobs
                                 moved to the delayed set. Every other job
                                 spent a token and may start now.
]]
local delayed = KEYS[6]
local group, consumer = ARGV[1], ARGV[2]
local now, max, period = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local names = { 'critical', 'high', 'medium', 'low' }
local FIRST, STRIDE = 6, 4
local OK = 0

local window = math.floor(now / period)
local windows, lost, deferred, moves = {}, {}, {}, {}

-- Read and decide everything before the first write.
for i = FIRST, #ARGV, STRIDE do
  local p, id, k, envelope = tonumber(ARGV[i]), ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  local w = windows[k]
  if not w then
    local h = redis.call('HMGET', KEYS[k], 'w', 'n', 'rw', 'rn')
    local open = tonumber(h[1])
    local at = math.max(window, open or window)
    w = { at = at, n = 0, rw = tonumber(h[3]) or 0, rn = tonumber(h[4]) or 0 }
    if open == w.at then w.n = tonumber(h[2]) or 0 end
    windows[k] = w
  end
  local pending = redis.call('XPENDING', KEYS[1 + p], group, id, id, 1)
  if not (pending[1] and pending[1][2] == consumer) then
    lost[#lost + 1] = id
  elseif w.n < max then
    w.n = w.n + 1
  else
    if w.rw <= w.at then w.rw, w.rn = w.at + 1, 0 end
    if w.rn >= max then w.rw, w.rn = w.rw + 1, 0 end
    w.rn = w.rn + 1
    local due = w.rw * period
    moves[#moves + 1] = { p, id, due, envelope }
    deferred[#deferred + 1] = id
    deferred[#deferred + 1] = due
  end
end

for _, m in ipairs(moves) do
  redis.call('ZADD', delayed, m[3], m[1] .. m[4])
  redis.call('XACK', KEYS[1 + m[1]], group, m[2])
  redis.call('XDEL', KEYS[1 + m[1]], m[2])
end
for k, w in pairs(windows) do
  redis.call('HSET', KEYS[k], 'w', w.at, 'n', w.n, 'rw', w.rw, 'rn', w.rn)
  local keep = math.max(2 * period, (w.rw + 1) * period - now)
  redis.call('PEXPIRE', KEYS[k], keep)
end
for _, m in ipairs(moves) do
  redis.call('HINCRBY', KEYS[1], 'rate_limited:' .. names[m[1]], 1)
end
return { OK, lost, deferred }
