-- One login attempt against a throttle counter, atomically (throttle.rs has
-- the same arithmetic in the process): allowed when the key's "next allowed
-- at" time has passed, and then counted, setting that time for the next
-- attempt at once; refused, and not counted, before it.
--
-- TIME, then writes: effects replication (see gcra.lua).
--
-- KEYS[1]  the counter: a hash, `n` the attempts since the last successful
--          login, `at` the time before which none is allowed (µs, Redis's
--          clock); it expires after ARGV[4] ms without an attempt.
-- KEYS[2]  optional: the account's known addresses (see known.lua); when
--          ARGV[5] is in it and has not expired, the attempt is exempt.
-- ARGV[1]  attempts without delay; ARGV[2] the first delay and ARGV[3] the
--          longest, in µs; ARGV[4] the decay in ms; ARGV[5] with KEYS[2]: the
--          client's address.
--
-- Returns {outcome, wait}: outcome 1 allowed, 0 refused (wait: µs left), 2 exempt.
redis.replicate_commands()
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
if KEYS[2] then
  local expiry = redis.call('ZSCORE', KEYS[2], ARGV[5])
  if expiry and tonumber(expiry) * 1000 > now then
    return {2, 0}
  end
end
local state = redis.call('HMGET', KEYS[1], 'n', 'at')
local n = tonumber(state[1]) or 0
local at = tonumber(state[2]) or 0
if now < at then
  return {0, at - now}
end
n = n + 1
local free = math.max(tonumber(ARGV[1]), 1)
local delay = 0
if n >= free then
  delay = math.min(tonumber(ARGV[2]) * 2 ^ math.min(n - free, 40), tonumber(ARGV[3]))
end
-- %d: a plain number of 16 digits, where tostring would round it to 14.
redis.call('HMSET', KEYS[1], 'n', n, 'at', string.format('%d', now + delay))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {1, 0}
