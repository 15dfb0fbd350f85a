-- Remembers that an address logged into an account, atomically.
--
-- KEYS[1]  the account's known addresses: a sorted set, address -> expiry in
--          milliseconds on Redis's clock (TIME).
-- ARGV[1]  the address; ARGV[2] how long to remember it, in ms; ARGV[3] how many
--          addresses an account keeps (the most recent), which bounds the set.
-- TIME, then writes: effects replication (see gcra.lua).
redis.replicate_commands()
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], string.format('%d', now + ttl), ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[3]) + 1))
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
