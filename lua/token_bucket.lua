-- token_bucket.lua: one atomic token-bucket decision. It mirrors limiter/bucket.py (refill, take)
-- operation for operation, so the Redis and local backends decide bit-for-bit alike.
--
-- KEYS[1]  the bucket. Value: "<tokens> <stamp>", two numbers written with %.17g so they load back
--          exactly (Lua's own number-to-string keeps only 14 significant digits).
-- ARGV[1]  capacity      tokens, > 0
-- ARGV[2]  refill_rate   tokens per second, > 0
-- ARGV[3]  cost          tokens this request takes, 0 < cost <= capacity
-- ARGV[4]  now           seconds since the epoch, or "" to use Redis's own clock (TIME), which then
--                        is the one clock that every app server shares
-- ARGV[5]  slack_ms      milliseconds the key outlives the moment its bucket is full again
--
-- Reply: { allowed (1 or 0), tokens, stamp, now }: the bucket as stored after the decision (the new
-- state when allowed, the stored one untouched when denied) and the time used, the numbers as %.17g
-- strings (a Lua number in a reply is cut to an integer). limiter/bucket.py:decide derives the rest.
--
-- Writes only when the request is allowed (a denial changes nothing), with SET ... PX, so no key is
-- ever left without a TTL and an idle key disappears once its bucket would be full again.

local capacity = tonumber(ARGV[1])
local refill_rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
local slack_ms = tonumber(ARGV[5])
local MAX_TTL_MS = 9007199254740992 -- 2^53 ms, 285,000 years: far inside what PEXPIRE accepts

if now == nil then
  local time = redis.call('TIME')
  now = tonumber(time[1]) + tonumber(time[2]) / 1000000
end

local tokens, stamp = nil, nil
local stored = redis.call('GET', KEYS[1])
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

local allowed = 0
if available >= cost then
  allowed = 1
  tokens = available - cost
  if now > stamp then stamp = now end
  local full_after = (stamp - now) + (capacity - tokens) / refill_rate
  local ttl_ms = math.min(MAX_TTL_MS, math.max(1, math.ceil(full_after * 1000) + slack_ms))
  redis.call('SET', KEYS[1], string.format('%.17g %.17g', tokens, stamp),
             'PX', string.format('%d', ttl_ms))
end

return { allowed, string.format('%.17g', tokens), string.format('%.17g', stamp),
         string.format('%.17g', now) }
