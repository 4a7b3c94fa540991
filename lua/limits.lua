-- limits.lua: the driver of the script that checks several limits of one request at once, all or
-- nothing; the script is every algorithm's function (token_bucket.lua, fixed_window.lua,
-- sliding_window.lua) and this.
--
-- KEYS[i]  limit i's key (one identity's keys share a Cluster hash slot: rl:{<identity>}:<policy>)
-- ARGV[1]  now, or "" for Redis's own clock (TIME); ARGV[2] slack_ms
-- ARGV     then five per limit: algorithm (its number in `steps`: 1 token_bucket, 2 fixed_window, ...), its two
--          numbers, cost, and 1 when the limit is enforced or 0 when it is a shadow one
--
-- Every limit decides on its state as stored (nothing is written until all have); the request is admitted
-- when every enforced limit allows it, and then every limit that allows it (shadow ones too) is charged;
-- otherwise none is.
-- Reply: { admitted, now, then per limit: allowed, charged, its state after..., and for a limit left
-- uncharged its state before... (a charged limit's is never read: the reply stays short) }.

local now = tonumber(ARGV[1])
if now == nil then
  local time = redis.call('TIME')
  now = tonumber(time[1]) + tonumber(time[2]) / 1000000
end
local slack_ms = tonumber(ARGV[2])
-- `steps`, the algorithms' functions in the order of their numbers, is defined before this driver.

local results, admitted = {}, 1
for i = 1, #KEYS do
  local at = 2 + (i - 1) * 5
  local step = steps[tonumber(ARGV[at + 1])]
  local allowed, state, value, ttl_ms, before = step(KEYS[i], tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3]),
                                                     tonumber(ARGV[at + 4]), now, slack_ms)
  results[i] = { allowed, state, value, ttl_ms, before or state }
  if allowed == 0 and ARGV[at + 5] == '1' then admitted = 0 end
end

local reply = { admitted, string.format('%.17g', now) }
for i = 1, #KEYS do
  local allowed, state, value, ttl_ms, before = unpack(results[i])
  local charged = 0
  if allowed == 1 and admitted == 1 then
    charged = 1
    redis.call('SET', KEYS[i], value, 'PX', string.format('%d', ttl_ms))
  end
  reply[#reply + 1] = allowed
  reply[#reply + 1] = charged
  for _, field in ipairs(state) do reply[#reply + 1] = field end
  if charged == 0 then
    for _, field in ipairs(before) do reply[#reply + 1] = field end
  end
end
return reply
