//! The Lua scripts the Redis backend runs: each decision is one script
//! call, so it is atomic across every node and costs one round trip. Each
//! touches the keys of one hash tag only (see `redis::keys`), so it runs
//! on a Redis Cluster too. The rate arithmetic is the admission crate's
//! (`gcra::GCRA_FN`, prepended to the scripts that charge), so the
//! embedded backend and Redis share one definition of it.

/// The connect decision (issue 18: one round trip per decision): a
/// range's facts, then concurrency leases, then rate charges, all or
/// none. Runs after `GCRA_FN`.
///
/// KEYS: with a lookup, the range's `dr` and `unknown` first; then L
/// lease sets; then C buckets. ARGV[1] now (µs); ARGV[2] lookup: '0'
/// none, '1' read the facts, '2' read them and take nothing when domains
/// vouch for the range (the caller then decides their class); ARGV[3] L;
/// ARGV[4] C; ARGV[5] now (ms); ARGV[6] the leases' expiry (ms); ARGV[7]
/// the lease member (node:sequence); then L maxima; then per bucket its
/// interval and cost.
///
/// Returns {status, index, retry_us, domains (flat field/value), unknown}:
/// status 0 granted, 1 vouched (nothing taken), 2 lease set `index` full,
/// 3 bucket `index` full for retry_us.
pub(crate) const ADMIT_LUA: &str = r#"
local now = tonumber(ARGV[1])
local L, C = tonumber(ARGV[3]), tonumber(ARGV[4])
local now_ms = tonumber(ARGV[5])
local k = 0
local dr, unk = {}, 0
if ARGV[2] ~= '0' then
  dr = redis.call('HGETALL', KEYS[1])
  unk = tonumber(redis.call('GET', KEYS[2]) or '0')
  k = 2
  if ARGV[2] == '2' and #dr > 0 then return {1, 0, 0, dr, unk} end
end
for i = 1, L do
  local z = KEYS[k + i]
  redis.call('ZREMRANGEBYSCORE', z, '-inf', now_ms)
  if redis.call('ZCARD', z) >= tonumber(ARGV[7 + i]) then return {2, i, 0, dr, unk} end
end
local full, retry = gcra(k + L, C, 7 + L, now)
if full > 0 then return {3, full, retry, dr, unk} end
for i = 1, L do
  local z = KEYS[k + i]
  redis.call('ZADD', z, ARGV[6], ARGV[7])
  redis.call('PEXPIRE', z, tonumber(ARGV[6]) - now_ms)
end
return {0, 0, 0, dr, unk}
"#;

/// Give back charges a decision took when a later call of the same
/// decision refused (Redis Cluster: a decision spanning budgets is one
/// call per budget). GCRA charges add to the TAT, so taking the same
/// amount off undoes them whatever came between. KEYS: the buckets;
/// ARGV[1] now (µs); then per bucket its interval and cost.
pub(crate) const REFUND_LUA: &str = r#"
local now = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key) or '0')
  local back = tat - tonumber(ARGV[2 * i]) * tonumber(ARGV[2 * i + 1])
  if back <= now then
    redis.call('DEL', key)
  else
    redis.call('SET', key, string.format('%.0f', back), 'PX', math.floor((back - now) / 1000) + 1000)
  end
end
return 0
"#;

/// A node's heartbeat renews its leases in one set: KEYS[1] the set,
/// ARGV[1] the new expiry (ms), ARGV[2] its lifetime (ms), then the
/// members. Members no longer there (given back meanwhile) stay gone.
pub(crate) const RENEW_LUA: &str = r#"
for i = 3, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[i])
end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
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

/// One step of sweeping the shared blocklist: the entries one HSCAN step
/// returns, those that ended removed in the same call (so a range blocked
/// again meanwhile stays). Small steps keep Redis answering every node
/// while a flood's worth is swept. KEYS[1]: the blocklist hash; ARGV:
/// now (seconds), the cursor, the step. An entry that does not parse is
/// left alone (nodes ignore it). Returns {next cursor, removed}.
pub(crate) const SWEEP_LUA: &str = r#"
local now = tonumber(ARGV[1])
local step = redis.call('HSCAN', KEYS[1], ARGV[2], 'COUNT', ARGV[3])
local kv = step[2]
local batch, removed = {}, 0
for i = 1, #kv, 2 do
  local ok, e = pcall(cjson.decode, kv[i + 1])
  local ends = ok and type(e) == 'table' and tonumber(e['until'])
  if ends and ends <= now then
    batch[#batch + 1] = kv[i]
    if #batch == 1000 then
      removed = removed + redis.call('HDEL', KEYS[1], unpack(batch))
      batch = {}
    end
  end
end
if #batch > 0 then
  removed = removed + redis.call('HDEL', KEYS[1], unpack(batch))
end
return {step[1], removed}
"#;

/// A start at an outbound site, on every node's ledger (issue 30): the
/// site's pause record, then a connection lease, then the pace (the
/// shaping crate's `SITE_START_FN`, prepended), all or nothing. KEYS[1]
/// the pause record (a hash), KEYS[2] the lease set, KEYS[3] the next
/// start. ARGV[1] now (ms), ARGV[2] the lease's expiry (ms), ARGV[3] the
/// lease member, ARGV[4] the most connections, ARGV[5] not before (ms),
/// ARGV[6] the interval (ms), ARGV[7] the longest wait (ms).
///
/// Returns {status, at, pause record (flat field/value)}: status 0 taken
/// (the start at `at`), 1 every connection open, 2 the next start is at
/// `at`, beyond the wait, 3 paused; only 0 takes anything.
pub(crate) const SITE_TAKE_LUA: &str = r#"
local now = tonumber(ARGV[1])
local p = redis.call('HGETALL', KEYS[1])
if tonumber(redis.call('HGET', KEYS[1], 'until') or '0') > now then return {3, 0, p} end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return {1, 0, p} end
local at = site_start(KEYS[3], now, tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]))
if at < 0 then return {2, -at, p} end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]) - now)
return {0, at, p}
"#;

/// A site's pause for every node: kept unless a later one is kept
/// already. KEYS[1] the pause record; ARGV: until, keep until (both ms),
/// reason, pauses, rate (0: none), step, the rate refused (0: none).
/// Returns 1 when written.
pub(crate) const SITE_PAUSE_LUA: &str = r#"
if tonumber(redis.call('HGET', KEYS[1], 'until') or '0') >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'until', ARGV[1], 'reason', ARGV[3], 'pauses', ARGV[4], 'rate', ARGV[5], 'step', ARGV[6], 'refused', ARGV[7])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
"#;
