-- sliding_window.lua: one atomic sliding-window-counter decision. It mirrors
-- limiter/algorithms/sliding_window.py (counts, estimate, take) operation for operation.
--
-- KEYS[1]  the counter. Value: "sw <window index> <current> <previous>", the numbers written with
--          %.17g; the tag keeps another algorithm's value from being read as counts (it reads as fresh).
-- ARGV[1]  limit      cost admitted per sliding window, > 0
-- ARGV[2]  window     seconds, > 0; windows are aligned to the Unix epoch
-- ARGV[3]  cost       0 < cost <= limit
-- ARGV[4]  now        seconds since the epoch, or "" for Redis's own clock (TIME)
-- ARGV[5]  slack_ms   milliseconds the key outlives the moment its count stops mattering
--
-- Reply: { allowed (1 or 0), window index, current, previous, now } as %.17g strings: the state as
-- stored after the decision (untouched when denied) and `now` as given (or read), even when time went
-- back: the model decides from it.

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
local stored_index, stored_current, stored_previous = nil, 0, 0
local stored = redis.call('GET', KEYS[1])
if stored then
  local s_index, s_current, s_previous = string.match(stored, '^sw (%S+) (%S+) (%S+)$')
  stored_index, stored_current, stored_previous = tonumber(s_index), tonumber(s_current), tonumber(s_previous)
  if stored_index == nil or stored_current == nil or stored_previous == nil then
    stored_index, stored_current, stored_previous = nil, 0, 0 -- not ours: fresh
  end
end

local at = now -- the time decided at: a now before the stored window's start is taken as that start
if stored_index ~= nil and index < stored_index then
  index, at = stored_index, stored_index * window -- time went back: the stored window stands
end
local current, previous = 0, 0
if stored_index == index then
  current, previous = stored_current, stored_previous
elseif stored_index ~= nil and index == stored_index + 1 then
  previous = stored_current
end

local start = index * window
local estimated = previous * (1 - (at - start) / window) + current

local allowed = 0
if estimated + cost <= limit then
  allowed = 1
  current = current + cost
  -- This window's count matters until the end of the next one.
  local ttl_ms = math.max(1, math.ceil(((index + 2) * window - at) * 1000) + slack_ms)
  redis.call('SET', KEYS[1], string.format('sw %.17g %.17g %.17g', index, current, previous),
             'PX', string.format('%d', ttl_ms))
  return { allowed, string.format('%.17g', index), string.format('%.17g', current),
           string.format('%.17g', previous), string.format('%.17g', now) }
end

-- Denied: the stored state, untouched (a fresh key is never denied: cost <= limit).
return { allowed, string.format('%.17g', stored_index or index), string.format('%.17g', stored_current),
         string.format('%.17g', stored_previous), string.format('%.17g', now) }
