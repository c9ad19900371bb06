#!lua
--[[
  enqueue: add jobs to a queue, now or later, once per idempotency key, and
  count them, atomically.

  No flags: under maxmemory + noeviction Redis refuses the whole call before the
  first write, so a batch is all-or-nothing and an OOM reply means nothing was
  added.

  Loss accounting (docs/guarantees.md, "Failover"): every job added takes the
  next number of the partition's sequence. An epoch is the run of numbers one
  server wrote, named by its replication id (`INFO replication`, which changes
  when a replica is promoted or a master restarts) and the time it began. A
  server that did not write the current epoch opens a new one, and the
  history records where each epoch began: every number before that was
  inherited, every later number of the epoch before it was lost. The caller
  names the epoch it last saw, so it learns which of its own acknowledged
  jobs the server never had. Where ACLs refuse `INFO`, there are no epochs
  and the reply says so with an empty epoch.

  KEYS[1]    stats hash          HINCRBY "enqueued:<p>", "name:enqueued:<name>",
                                 "scheduled", "deduplicated"
  KEYS[2..5] streams             critical, high, medium, low
  KEYS[6]    delayed zset        member = priority digit .. envelope, score = due ms
  KEYS[7]    events stream       XADD "enqueued" per job added (see ARGV[5])
  KEYS[8]    sequence hash       "n": jobs numbered; "epoch": the current
                                 epoch; "epochs": the last 8, "<epoch>
                                 <first number>;" each
  KEYS[9..]  idempotency keys    strings holding the id of the job that took them,
             and the live hash   tracked jobs that have not ended: HSET job id
                                 -> "<priority index> <where> <name>", where =
                                 the entry id, or "d<due ms>/<now ms>" for a
                                 delayed job (see ARGV)
  ARGV[1]    max backlog         jobs in the streams plus delayed beyond which the
                                 batch is refused; 0 = no bound
  ARGV[2]    now                 Unix ms
  ARGV[3]    per-name counters   1 = keep them, 0 = per priority only
  ARGV[4]    tracking            1 = jobs are tracked; 0 = they are not
  ARGV[5]    events cap          approximate MAXLEN of the events stream;
                                 0 = no events
  ARGV[6]    known epoch         the epoch the caller last saw; "" = none
  ARGV[7..]  eight per job:      priority index (1 = critical .. 4 = low),
                                 due (Unix ms; 0 = now),
                                 idempotency key index into KEYS (0 = none),
                                 idempotency ttl (ms),
                                 job id,
                                 job name,
                                 live hash index into KEYS (0 = untracked),
                                 envelope bytes (opaque, never decoded here)
             then, optionally, "added" and triples of (priority index,
                                 job name, n): jobs the caller adds
                                 itself with XADD right after this call,
                                 in the same MULTI/EXEC (docs/protocol.md,
                                 "Enqueue without the envelope in Lua"):
                                 counted and numbered here after the jobs
                                 above, in the caller's order. Only for
                                 jobs due now, without idempotency key,
                                 untracked, with events off and no max
                                 backlog: nothing here could refuse or
                                 record them

  Returns    {OK, duplicates, epoch, first, kept}
                                 added; duplicates: for each job whose
                                 idempotency key was taken, its 1-based
                                 position in the call and the id of the job
                                 holding the key (pairs, flat); epoch: the
                                 current epoch ("" = no accounting); first:
                                 the number of the first job added (the rest
                                 follow in call order, duplicates skipped);
                                 kept: when ARGV[6] names an earlier epoch,
                                 its last number this server has (0 when
                                 that epoch is no longer in the history,
                                 -2 when the sequence was deleted on this
                                 same server, by obliterate), else -1
             {QUEUE_FULL, backlog, limit}
                                 refused: the backlog would exceed ARGV[1];
                                 nothing was written
]]
local stats, delayed, events, sequence = KEYS[1], KEYS[6], KEYS[7], KEYS[8]
local max_backlog = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local by_name = ARGV[3] == '1'
local tracking = ARGV[4] ~= '0'
local events_cap = tonumber(ARGV[5])
local known = ARGV[6]
local names = { 'critical', 'high', 'medium', 'low' }
local FIRST, STRIDE = 7, 8
local HISTORY = 8
local OK, QUEUE_FULL = 0, 1

-- Where the jobs end: the "added" trailer, or the end of ARGV.
local last = #ARGV
for i = FIRST, #ARGV, STRIDE do
  if ARGV[i] == 'added' then
    last = i - 1
    break
  end
end
local jobs = (last - FIRST + 1) / STRIDE
if max_backlog > 0 then
  local backlog = redis.call('ZCARD', delayed)
  for p = 1, 4 do
    backlog = backlog + redis.call('XLEN', KEYS[1 + p])
  end
  if backlog + jobs > max_backlog then
    return { QUEUE_FULL, backlog, max_backlog }
  end
end

local counts = {}
local function count(field, n)
  counts[field] = (counts[field] or 0) + n
end

local state = redis.call('HMGET', sequence, 'n', 'epoch', 'epochs')
local seq = tonumber(state[1]) or 0
local epoch, history = state[2] or '', state[3] or ''
local info = redis.pcall('INFO', 'replication')
local server = type(info) == 'string' and string.match(info, 'master_replid:(%x+)') or ''
local function server_of(e)
  return string.match(e, '^(%x+)/') or ''
end
if server == '' then
  epoch = ''
elseif server_of(epoch) ~= server then
  epoch = server .. '/' .. ARGV[2]
  history = history .. epoch .. ' ' .. (seq + 1) .. ';'
  local _, epochs = string.gsub(history, ';', '')
  for _ = HISTORY + 1, epochs do
    history = string.gsub(history, '^[^;]*;', '', 1)
  end
  redis.call('HSET', sequence, 'epoch', epoch, 'epochs', history)
end
local kept = -1
if epoch ~= '' and known ~= '' and known ~= epoch then
  local before, found = nil, false
  for e, from in string.gmatch(history, '(%S+) (%d+);') do
    if before == known then
      kept, found = tonumber(from) - 1, true
      break
    end
    before = e
  end
  if not found then
    kept = server_of(known) == server and -2 or 0
  end
end
local first = seq + 1

-- Live records go out in one HSET per live hash (every redis.call costs
-- more than the fields it carries), in slices that unpack() can expand.
local live_fields, LIVE_SLICE = {}, 1000
local function write_live(index)
  redis.call('HSET', KEYS[index], unpack(live_fields[index]))
  live_fields[index] = {}
end
local function record_live(index, job_id, record)
  local fields = live_fields[index] or {}
  live_fields[index] = fields
  fields[#fields + 1] = job_id
  fields[#fields + 1] = record
  if #fields >= LIVE_SLICE then write_live(index) end
end

local duplicates = {}
for i = FIRST, last, STRIDE do
  local p, due = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local key_index, ttl = tonumber(ARGV[i + 2]), ARGV[i + 3]
  local job_id, name = ARGV[i + 4], ARGV[i + 5]
  local live_index, envelope = tonumber(ARGV[i + 6]), ARGV[i + 7]
  local holder = false
  if key_index > 0 then
    holder = redis.call('GET', KEYS[key_index])
  end
  if holder then
    duplicates[#duplicates + 1] = (i - FIRST) / STRIDE + 1
    duplicates[#duplicates + 1] = holder
    count('deduplicated', 1)
  else
    if key_index > 0 then
      redis.call('SET', KEYS[key_index], job_id, 'PX', ttl)
    end
    local where
    if due > now then
      redis.call('ZADD', delayed, due, p .. envelope)
      count('scheduled', 1)
      where = 'd' .. due .. '/' .. ARGV[2]
    else
      where = redis.call('XADD', KEYS[1 + p], '*', 'e', envelope)
    end
    if live_index > 0 and tracking then
      record_live(live_index, job_id, p .. ' ' .. where .. ' ' .. name)
    end
    if events_cap > 0 then
      redis.call('XADD', events, 'MAXLEN', '~', events_cap, '*', 'ev', 'enqueued',
                 'job', job_id, 'name', name, 'p', names[p], 'at', now, 'due', due)
    end
    seq = seq + 1
    count('enqueued:' .. names[p], 1)
    if by_name then count('name:enqueued:' .. name, 1) end
  end
end
for i = last + 2, #ARGV, 3 do
  local p, name, n = tonumber(ARGV[i]), ARGV[i + 1], tonumber(ARGV[i + 2])
  seq = seq + n
  count('enqueued:' .. names[p], n)
  if by_name then count('name:enqueued:' .. name, n) end
end
for index, fields in pairs(live_fields) do
  if #fields > 0 then write_live(index) end
end
for field, n in pairs(counts) do
  redis.call('HINCRBY', stats, field, n)
end
if seq + 1 > first then
  redis.call('HSET', sequence, 'n', seq)
end
return { OK, duplicates, epoch, first, kept }
