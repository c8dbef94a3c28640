//! The Lua scripts the Redis backend runs: each decision is one script
//! call, so it is atomic across every node and costs one round trip. The
//! GCRA script is the admission crate's (`gcra::GCRA_LUA`), so the
//! embedded backend and Redis share one definition of the arithmetic.

/// Lookup at connect, one round trip: the blocklist and the known-sender
/// list at every range holding the client, the domains seen from its
/// range, and its recent "user unknown" count.
pub(crate) const LOOKUP_LUA: &str = r#"
local bl = redis.call('HMGET', KEYS[1], unpack(ARGV))
local ks = redis.call('HMGET', KEYS[2], unpack(ARGV))
local dr = redis.call('HGETALL', KEYS[3])
local unk = tonumber(redis.call('GET', KEYS[4]) or '0')
return {bl, ks, dr, unk}
"#;

/// Count a message and a verdict; returns the reputation hash.
pub(crate) const RECORD_LUA: &str = r#"
local k = KEYS[1]
local now = ARGV[1]
if ARGV[2] == '1' then
  redis.call('HINCRBY', k, 'messages', 1)
  redis.call('HSETNX', k, 'first_seen', now)
end
if ARGV[3] == 'ham' then
  redis.call('HINCRBY', k, 'ham', 1)
  redis.call('HINCRBY', k, 'ham_at_level', 1)
elseif ARGV[3] == 'spam' then
  redis.call('HINCRBY', k, 'spam', 1)
  redis.call('HINCRBY', k, 'spam_at_level', 1)
end
redis.call('HSET', k, 'last_seen', now)
redis.call('SADD', KEYS[2], k)
return redis.call('HGETALL', k)
"#;

/// Apply a level change only if no other node applied one meanwhile.
pub(crate) const LEVEL_LUA: &str = r#"
local cur = tonumber(redis.call('HGET', KEYS[1], 'level') or '0')
if cur ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'level', ARGV[2], 'ham_at_level', 0, 'spam_at_level', 0, 'last_change', ARGV[3])
return 1
"#;

/// Submission quotas shared by every node: fixed-window counters, all
/// charged or none. KEYS: one counter per window; ARGV: n, then limit and
/// lifetime per key. Returns 0, or the 1-based index of the full window.
pub(crate) const QUOTA_LUA: &str = r#"
local n = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local used = tonumber(redis.call('GET', key) or '0')
  if used + n > tonumber(ARGV[2 * i]) then return i end
end
for i, key in ipairs(KEYS) do
  redis.call('INCRBY', key, n)
  redis.call('EXPIRE', key, tonumber(ARGV[2 * i + 1]))
end
return 0
"#;

/// A concurrency slot shared by every node: a sorted set of leases
/// scored by expiry. Expired leases (a node that died) are dropped first.
/// ARGV: now (ms), lease (ms), max, member. Returns 1 if taken.
pub(crate) const LEASE_LUA: &str = r#"
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#;

/// The AUTH throttle's view of one attempt: failures from the address
/// and on the account with seconds until each is forgotten, and whether
/// the account has logged in from the address before.
pub(crate) const AUTH_LUA: &str = r#"
local a = tonumber(redis.call('GET', KEYS[1]) or '0')
local c = tonumber(redis.call('GET', KEYS[2]) or '0')
return {a, redis.call('TTL', KEYS[1]), c, redis.call('TTL', KEYS[2]), redis.call('EXISTS', KEYS[3])}
"#;
