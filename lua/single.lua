-- single.lua: the driver of a one-limit script; the script is the algorithm's function (token_bucket.lua,
-- fixed_window.lua or sliding_window.lua) and this, with `step` bound to that function before it.
--
-- KEYS[1]  the limit's key
-- ARGV     the algorithm's two numbers (capacity and refill_rate, or limit and window), cost, now (or ""
--          for Redis's own clock, TIME), slack_ms
--
-- Reply: { allowed (1 or 0), the state as stored after the decision..., now } as strings (a Lua number in
-- a reply is cut to an integer): `now` as given or read, even when time went back; the model decides from it.

local now = tonumber(ARGV[4])
if now == nil then
  local time = redis.call('TIME')
  now = tonumber(time[1]) + tonumber(time[2]) / 1000000
end

local allowed, state, value, ttl_ms = step(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), now,
                                           tonumber(ARGV[5]))
if allowed == 1 then
  redis.call('SET', KEYS[1], value, 'PX', string.format('%d', ttl_ms))
end
local reply = { allowed }
for _, field in ipairs(state) do reply[#reply + 1] = field end
reply[#reply + 1] = string.format('%.17g', now)
return reply
