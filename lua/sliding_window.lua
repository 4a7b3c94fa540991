-- sliding_window.lua: one sliding-window-counter decision, as a function the drivers call (single.lua,
-- limits.lua). It mirrors limiter/algorithms/sliding_window.py (counts, estimate, take) operation for
-- operation.
--
-- key          the counter. Value: "sw <window index> <current> <previous>", the numbers written with
--              %.17g; the tag keeps another algorithm's value from being read as counts (it reads as fresh).
-- limit        cost admitted per sliding window, > 0; window: seconds, > 0, aligned to the Unix epoch
-- cost         0 < cost <= limit; now: seconds since the epoch
-- slack_ms     milliseconds the key outlives the moment its count stops mattering
--
-- Returns allowed (1 or 0); { window index, current, previous } as %.17g strings, the state as stored
-- after the decision (untouched when denied); and, when allowed, the value to SET, its TTL in ms and the
-- state as stored before.

local function sliding_window(key, limit, window, cost, now, slack_ms)
  local index = math.floor(now / window)
  local stored_index, stored_current, stored_previous = nil, 0, 0
  local stored = redis.call('GET', key)
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
  -- The stored state (a fresh key is never denied: cost <= limit).
  local before = { string.format('%.17g', stored_index or index), string.format('%.17g', stored_current),
                   string.format('%.17g', stored_previous) }
  if estimated + cost > limit then
    return 0, before
  end
  current = current + cost
  -- This window's count matters until the end of the next one.
  local ttl_ms = math.max(1, math.ceil(((index + 2) * window - at) * 1000) + slack_ms)
  return 1, { string.format('%.17g', index), string.format('%.17g', current), string.format('%.17g', previous) },
         string.format('sw %.17g %.17g %.17g', index, current, previous), ttl_ms, before
end
