//! The one connection a node keeps to its Redis, whatever the Redis is:
//! a single server, the master a set of sentinels names, or a Redis
//! Cluster. Every connection here is multiplexed: concurrent decisions
//! share it and their commands are pipelined on the wire.

use portcullis_config::RedisTarget;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::time::Duration;

/// A connection to the shared state. Cheap to clone (a handle).
#[derive(Clone)]
pub(crate) enum Shared {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Shared {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Shared::Single(c) => c.req_packed_command(cmd),
            Shared::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Shared::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Shared::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Shared::Single(c) => c.get_db(),
            Shared::Cluster(c) => c.get_db(),
        }
    }
}

/// How to reach the Redis the config names. Sentinel mode asks the
/// sentinels for the master at every (re)connect, so after a failover
/// the next connection goes to the promoted replica.
pub(crate) enum Dialer {
    Single(redis::Client),
    Sentinel(tokio::sync::Mutex<SentinelClient>),
    Cluster(redis::cluster::ClusterClient),
}

impl Dialer {
    pub(crate) fn new(target: &RedisTarget, timeout: Duration) -> anyhow::Result<Dialer> {
        let what = |e: redis::RedisError| anyhow::anyhow!("[state] {}: {e}", describe(target));
        Ok(match target {
            RedisTarget::Single(url) => {
                Dialer::Single(redis::Client::open(url.as_str()).map_err(what)?)
            }
            RedisTarget::Sentinel { sentinels, master } => {
                let c = SentinelClient::build(
                    sentinels.clone(),
                    master.clone(),
                    None,
                    SentinelServerType::Master,
                )
                .map_err(what)?;
                Dialer::Sentinel(tokio::sync::Mutex::new(c))
            }
            RedisTarget::Cluster(nodes) => Dialer::Cluster(
                redis::cluster::ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    // A failing master is our signal to decide locally,
                    // not to wait: the caller's timeout bounds it anyway.
                    .retries(1)
                    .build()
                    .map_err(what)?,
            ),
        })
    }

    /// A fresh connection.
    pub(crate) async fn dial(&self, timeout: Duration) -> redis::RedisResult<Shared> {
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        Ok(match self {
            Dialer::Single(c) => {
                Shared::Single(c.get_multiplexed_async_connection_with_config(&cfg).await?)
            }
            Dialer::Sentinel(s) => Shared::Single(
                s.lock()
                    .await
                    .get_async_connection_with_config(&cfg)
                    .await?,
            ),
            Dialer::Cluster(c) => Shared::Cluster(c.get_async_connection().await?),
        })
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Dialer::Cluster(_))
    }
}

/// The target as the log and errors name it (no passwords).
pub(crate) fn describe(target: &RedisTarget) -> String {
    let strip = |u: &str| match u.split_once('@') {
        Some((scheme_user, host)) => {
            let scheme = scheme_user.split("://").next().unwrap_or("redis");
            format!("{scheme}://…@{host}")
        }
        None => u.to_owned(),
    };
    match target {
        RedisTarget::Single(u) => format!("redis_url {}", strip(u)),
        RedisTarget::Sentinel { sentinels, master } => format!(
            "sentinels {} (master {master})",
            sentinels
                .iter()
                .map(|s| strip(s))
                .collect::<Vec<_>>()
                .join(",")
        ),
        RedisTarget::Cluster(nodes) => format!(
            "cluster_nodes {}",
            nodes.iter().map(|s| strip(s)).collect::<Vec<_>>().join(",")
        ),
    }
}
