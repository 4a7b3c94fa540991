-- fixed_window.lua: one fixed-window decision, as a function the drivers call (single.lua, limits.lua). It
-- mirrors limiter/algorithms/fixed_window.py (take) operation for operation.
--
-- key          the window's counter. Value: "fw <window index> <current>", the numbers written with
--              %.17g; the tag keeps another algorithm's value under the same key name (a policy whose
--              algorithm changed) from being read as a count: it reads as a fresh key.
-- limit        cost admitted per window, > 0; window: seconds, > 0, aligned to the Unix epoch
-- cost         0 < cost <= limit; now: seconds since the epoch; slack_ms: ms the key outlives its window
--
-- Returns allowed (1 or 0); { window index, current } as %.17g strings, the state as stored after the
-- decision (untouched when denied); and, when allowed, the value to SET, its TTL in ms and the state
-- before (the window as counted before this request).

local function fixed_window(key, limit, window, cost, now, slack_ms)
  local index = math.floor(now / window)
  local stored_index, current = nil, 0
  local stored = redis.call('GET', key)
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

  -- A denial happens only in the stored window, so (index, current) is the stored state then.
  local before = { string.format('%.17g', index), string.format('%.17g', current) }
  if current + cost > limit then
    return 0, before
  end
  current = current + cost
  local ttl_ms = math.max(1, math.ceil(((index + 1) * window - at) * 1000) + slack_ms)
  return 1, { string.format('%.17g', index), string.format('%.17g', current) },
         string.format('fw %.17g %.17g', index, current), ttl_ms, before
end
