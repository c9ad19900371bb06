#!lua flags=allow-oom
--[[
  retire_consumer: remove a consumer from the group of every priority stream,
  but only where it owns no pending entry (XGROUP DELCONSUMER would destroy them).

  KEYS[1]    stats hash          (not written)
  KEYS[2..5] streams             critical, high, medium, low
  ARGV[1]    group
  ARGV[2]    consumer

  Returns    {OK, kept}          kept: streams where the consumer still owns
                                 entries and stays a member (0 = fully retired)
]]
local group = ARGV[1]
local consumer = ARGV[2]
local OK = 0
local kept = 0
for p = 1, 4 do
  -- A stream without the group (or no stream) has nothing to retire from.
  local owned = redis.pcall('XPENDING', KEYS[1 + p], group, '-', '+', 1, consumer)
  if type(owned) == 'table' and owned.err then
    -- nothing to do here
  elseif #owned == 0 then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1 + p], group, consumer)
  else
    kept = kept + 1
  end
end
return { OK, kept }
