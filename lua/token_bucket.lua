-- token_bucket.lua: one token-bucket decision, as a function the scripts' drivers call (single.lua for one
-- limit, limits.lua for several). It mirrors limiter/bucket.py (refill, take) operation for operation, so
-- the Redis and local backends decide bit for bit alike.
--
-- key          the bucket. Value: "<tokens> <stamp>", two numbers written with %.17g so they load back
--              exactly (Lua's own number-to-string keeps only 14 significant digits).
-- capacity     tokens, > 0; refill_rate: tokens per second, > 0; cost: 0 < cost <= capacity
-- now          seconds since the epoch (the caller's, or Redis's TIME: the one clock every app server shares)
-- slack_ms     milliseconds the key outlives the moment its bucket is full again
--
-- Returns allowed (1 or 0); the bucket as it is to be stored after the decision (the new state when
-- allowed, the stored one untouched when denied) as %.17g strings, from which limiter/bucket.py:decide
-- derives the rest; and, when allowed, the value to SET, its TTL in ms (a denial writes nothing; every
-- write has a TTL, so an idle key disappears once its bucket would be full again) and the state before.
local MAX_TTL_MS = 9007199254740992 -- 2^53 ms, 285,000 years: far inside what PEXPIRE accepts

local function token_bucket(key, capacity, refill_rate, cost, now, slack_ms)
  local tokens, stamp = nil, nil
  local stored = redis.call('GET', key)
  if stored then
    local stored_tokens, stored_stamp = string.match(stored, '^(%S+) (%S+)$')
    tokens, stamp = tonumber(stored_tokens), tonumber(stored_stamp)
  end
  if tokens == nil or stamp == nil then
    -- A key never seen, expired, or not written by this script: a full bucket.
    tokens, stamp = capacity, now
  end

  local elapsed = now - stamp
  if elapsed < 0 then elapsed = 0 end
  local available = math.min(capacity, tokens + elapsed * refill_rate)

  local before = { string.format('%.17g', tokens), string.format('%.17g', stamp) }
  if available < cost then
    return 0, before
  end
  tokens = available - cost
  if now > stamp then stamp = now end
  local full_after = (stamp - now) + (capacity - tokens) / refill_rate
  local ttl_ms = math.min(MAX_TTL_MS, math.max(1, math.ceil(full_after * 1000) + slack_ms))
  return 1, { string.format('%.17g', tokens), string.format('%.17g', stamp) },
         string.format('%.17g %.17g', tokens, stamp), ttl_ms, before
end
