-- fixed_window.lua: one atomic fixed-window decision. It mirrors limiter/algorithms/fixed_window.py
-- (take) operation for operation, so Redis and the model decide bit for bit alike.
--
-- KEYS[1]  the window's counter. Value: "fw <window index> <current>", the numbers written with %.17g;
--          the tag keeps another algorithm's value under the same key name (a policy whose algorithm
--          changed) from being read as a count: it reads as a fresh key.
-- ARGV[1]  limit      cost admitted per window, > 0
-- ARGV[2]  window     seconds, > 0; windows are aligned to the Unix epoch
-- ARGV[3]  cost       0 < cost <= limit
-- ARGV[4]  now        seconds since the epoch, or "" for Redis's own clock (TIME)
-- ARGV[5]  slack_ms   milliseconds the key outlives its window
--
-- Reply: { allowed (1 or 0), window index, current, now } as %.17g strings: the state as stored after
-- the decision (untouched when denied) and `now` as given (or read), even when time went back: the model
-- decides from it. A denial writes nothing; every write sets a TTL.

local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
local slack_ms = tonumber(ARGV[5])

if now == nil then
  local time = redis.call('TIME')
  now = tonumber(time[1]) + tonumber(time[2]) / 1000000
end

local index = math.floor(now / window)
local stored_index, current = nil, 0
local stored = redis.call('GET', KEYS[1])
if stored then
  local s_index, s_current = string.match(stored, '^fw (%S+) (%S+)$')
  stored_index, current = tonumber(s_index), tonumber(s_current)
  if stored_index == nil or current == nil then stored_index, current = nil, 0 end -- not ours: fresh
end

local at = now -- the time decided at: a now before the stored window's start is taken as that start
if stored_index ~= nil and index < stored_index then
  index, at = stored_index, stored_index * window -- time went back: the stored window stands
end
if stored_index ~= index then current = 0 end -- a new window counts afresh

-- A denial happens only in the stored window, so the reply's (index, current) is the stored state then.
local allowed = 0
if current + cost <= limit then
  allowed = 1
  current = current + cost
  local ttl_ms = math.max(1, math.ceil(((index + 1) * window - at) * 1000) + slack_ms)
  redis.call('SET', KEYS[1], string.format('fw %.17g %.17g', index, current), 'PX', string.format('%d', ttl_ms))
end

return { allowed, string.format('%.17g', index), string.format('%.17g', current), string.format('%.17g', now) }
