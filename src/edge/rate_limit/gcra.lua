-- One GCRA step, atomically: the same arithmetic as gcra.rs, in whole
-- microseconds, on Redis's clock (TIME), so that instances with skewed clocks
-- agree.
--
-- Written to run on Redis 3.2 and later: a script that reads TIME and then
-- writes must replicate its effects, not itself (the default from Redis 5 on;
-- before it, the first line turns it on, and later it is a harmless no-op).
-- With KEYS[2], both keys carry the account's hash tag (`{<hex>}`), so that in
-- a Redis Cluster they live in one slot, as a script's keys must.
--
-- KEYS[1]  the bucket: its value is the key's TAT, and it expires when the
--          quota is whole again (nothing is left to clean up).
-- KEYS[2]  optional: the account's known addresses (a sorted set, address ->
--          expiry in ms, see known.lua); when ARGV[3] is in it and has not
--          expired, the request is exempt and nothing is counted.
-- ARGV[1]  the emission interval T, in microseconds.
-- ARGV[2]  the quota q.
-- ARGV[3]  with KEYS[2]: the client's address.
--
-- Returns {outcome, ahead}: outcome 1 allowed, 0 refused, 2 exempt; ahead is
-- how far the TAT is past now, in microseconds, once the request is counted
-- (or, when refused, as it stands).
redis.replicate_commands()
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
if KEYS[2] then
  local expiry = redis.call('ZSCORE', KEYS[2], ARGV[3])
  if expiry and tonumber(expiry) * 1000 > now then
    return {2, 0}
  end
end
local interval = tonumber(ARGV[1])
local capacity = interval * tonumber(ARGV[2])
local tat = now
local stored = redis.call('GET', KEYS[1])
if stored then
  tat = math.max(tonumber(stored) or now, now)
end
local new_tat = tat + interval
if new_tat - now <= capacity then
  -- %d: a plain number of 16 digits, where tostring would round it to 14.
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
  return {1, new_tat - now}
end
return {0, tat - now}
