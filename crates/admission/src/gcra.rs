//! The generic cell rate algorithm: one number per bucket (the theoretical
//! arrival time, TAT) gives a rate limit with a burst of one period's
//! worth. The Redis backend runs this same arithmetic in Lua
//! (`GCRA_FN`), so a limit means the same on one node and on a cluster.

/// Every limit here is "per minute"; times are in microseconds so that
/// they stay exact in Lua's doubles (2^53 µs is 285 years).
pub const PERIOD_US: u64 = 60_000_000;

/// Microseconds one unit costs at `per_minute`.
pub fn interval_us(per_minute: u64) -> u64 {
    (PERIOD_US / per_minute.max(1)).max(1)
}

/// Charge `cost` units to a bucket whose TAT is `tat` (0 when new).
/// Ok: the new TAT. Err: how long until it would fit. An empty bucket
/// takes any single charge, so one message larger than a minute's bytes
/// still goes through (and the sender then waits).
pub fn charge(tat: u64, now: u64, per_minute: u64, cost: u64) -> Result<u64, u64> {
    let start = tat.max(now);
    let new = start.saturating_add(interval_us(per_minute).saturating_mul(cost));
    if tat > now && new - now > PERIOD_US {
        Err(new - now - PERIOD_US)
    } else {
        Ok(new)
    }
}

/// The same rule over several buckets at once, all or nothing, as a Lua
/// function for Redis scripts to include (the connect decision of the
/// state crate calls it beside its leases). `gcra(k0, n, a0, now)`
/// charges KEYS[k0+1 .. k0+n], bucket i with interval ARGV[a0+2i-1] (µs)
/// and cost ARGV[a0+2i]. Returns 0, 0 when admitted, else the index of
/// the first full bucket (1-based) and microseconds until it would fit.
pub const GCRA_FN: &str = r#"
local function gcra(k0, n, a0, now)
  local period = 60000000
  local news = {}
  for i = 1, n do
    local interval = tonumber(ARGV[a0 + 2 * i - 1])
    local cost = tonumber(ARGV[a0 + 2 * i])
    local tat = tonumber(redis.call('GET', KEYS[k0 + i]) or '0')
    local start = math.max(tat, now)
    local new = start + interval * cost
    if tat > now and new - now > period then
      return i, math.floor(new - now - period)
    end
    news[i] = new
  end
  for i = 1, n do
    local ttl = math.floor((news[i] - now) / 1000) + 1000
    redis.call('SET', KEYS[k0 + i], string.format('%.0f', news[i]), 'PX', ttl)
  end
  return 0, 0
end
"#;
