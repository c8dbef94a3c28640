//! `[state]`: the backend, and which Redis (one URL, Sentinel, or a
//! Cluster's seed nodes) with the checks serde cannot make.

use super::Invalid;
use crate::{RedisSettings, RedisTarget, StateBackend};
use serde::Deserialize;
use std::time::Duration;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawState {
    pub(super) backend: Option<Spanned<StateBackend>>,
    redis_url: Option<Spanned<String>>,
    sentinels: Option<Spanned<Vec<String>>>,
    sentinel_master: Option<String>,
    cluster_nodes: Option<Spanned<Vec<String>>>,
    #[serde(default = "default_node_timeout")]
    node_timeout_secs: u64,
}

fn default_node_timeout() -> u64 {
    20
}

impl RawState {
    /// The Redis the section names, if any: exactly one of `redis_url`,
    /// `sentinels` and `cluster_nodes`.
    pub(super) fn redis(self) -> Result<Option<RedisSettings>, Invalid> {
        let node_timeout = Duration::from_secs(self.node_timeout_secs.max(1));
        let target = match (self.redis_url, self.sentinels, self.cluster_nodes) {
            (None, None, None) => return Ok(None),
            (Some(url), None, None) => redis_url(url)?,
            (None, Some(s), None) => {
                let at = s.span().start;
                let master = self.sentinel_master.ok_or((
                    at,
                    "sentinels needs sentinel_master (the master's name)".into(),
                ))?;
                let sentinels = s.into_inner();
                if sentinels.is_empty() {
                    return Err((at, "sentinels must name at least one sentinel".into()));
                }
                RedisTarget::Sentinel { sentinels, master }
            }
            (None, None, Some(nodes)) => {
                if nodes.get_ref().is_empty() {
                    let at = nodes.span().start;
                    return Err((at, "cluster_nodes must name at least one seed node".into()));
                }
                RedisTarget::Cluster(nodes.into_inner())
            }
            (Some(url), _, _) => {
                let at = url.span().start;
                return Err((
                    at,
                    "give one of redis_url, sentinels and cluster_nodes".into(),
                ));
            }
            (None, Some(s), Some(_)) => {
                let at = s.span().start;
                return Err((at, "give one of sentinels and cluster_nodes".into()));
            }
        };
        Ok(Some(RedisSettings {
            target,
            node_timeout,
        }))
    }
}

/// `redis://…` (one Redis) or `redis+sentinel://h:p,h:p/master`.
fn redis_url(url: Spanned<String>) -> Result<RedisTarget, Invalid> {
    let at = url.span().start;
    let url = url.into_inner();
    let Some(rest) = url.strip_prefix("redis+sentinel://") else {
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err((
                at,
                format!("{url:?} is not a redis:// or redis+sentinel:// URL"),
            ));
        }
        return Ok(RedisTarget::Single(url));
    };
    let (hosts, master) = rest
        .split_once('/')
        .filter(|(h, m)| !h.is_empty() && !m.is_empty())
        .ok_or((
            at,
            "redis+sentinel:// needs host:port[,host:port...]/master_name".into(),
        ))?;
    Ok(RedisTarget::Sentinel {
        sentinels: hosts.split(',').map(|h| format!("redis://{h}")).collect(),
        master: master.to_owned(),
    })
}
