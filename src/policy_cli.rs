//! `portcullis policy-test`: one Postfix policy request from stdin,
//! answered by the policy service over this config, with the reason.
//! The state it decides on is a copy in memory (the embedded snapshot
//! when there is one): testing never spends a live budget.

use anyhow::Context as _;
use portcullis_config::{Config, StateBackend};
use portcullis_pipeline::{ClassOfService, Forwarding, Inbound, Submission};
use portcullis_policyd::{Parsed, PolicyService, parse};
use std::io::Read as _;
use std::sync::Arc;

pub fn policy_test(config: &Config) -> anyhow::Result<()> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read the request")?;
    // A request typed by hand may lack its closing empty line.
    let text = format!("{}\n\n", text.trim_end());
    let request = match parse(text.as_bytes()) {
        Parsed::Request(r, _) => r,
        Parsed::Malformed(why, _) => anyhow::bail!("not a policy request: {why}"),
        Parsed::Incomplete => anyhow::bail!("not a policy request: it never ends"),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let service = service(config)?;
        let a = service.answer(&request).await;
        println!("action={}", a.action);
        println!("# why: {}", if a.why.is_empty() { "-" } else { &a.why });
        Ok(())
    })
}

fn service(config: &Config) -> anyhow::Result<PolicyService> {
    let metrics = Arc::new(portcullis_metrics::Metrics::default());
    let state = match config.state_backend {
        StateBackend::Embedded => portcullis_state::Store::open(config)?,
        StateBackend::Redis => {
            eprintln!(
                "note: with Redis, budgets are counted as for a first request (Redis is not charged)"
            );
            portcullis_state::Store::in_memory(config.reputation.clone())
        }
    };
    let verifier =
        portcullis_server::verifier(config, &config.dns_nameservers, config.dns_timeout)?;
    let containment =
        portcullis_pipeline::Containment::new(state.clone(), Arc::new(NoQueue), metrics.clone());
    let inbound = Inbound {
        containment: Arc::new(containment),
        checks: Arc::new(verifier),
        queue: Arc::new(NoQueue),
        admission: ClassOfService::new(config, state, metrics.clone())?,
        submission: Submission::new(config, metrics.clone())?,
        forwarding: Forwarding::new(config)?,
        // The policy service never sees a message: no milters.
        milters: portcullis_pipeline::Milters::new(&[], metrics.clone()),
        metrics,
        // The policy service never sees message content: no DMARC rows.
        dmarc_observations: None,
    };
    Ok(PolicyService::new(
        Arc::new(inbound),
        Arc::new(config.clone()),
    ))
}

/// The policy service never queues mail.
struct NoQueue;

impl portcullis_pipeline::Intake for NoQueue {
    fn new_id(&self) -> String {
        String::new()
    }

    fn enqueue(
        &self,
        _: portcullis_queue::Envelope,
        _: Arc<Vec<u8>>,
    ) -> portcullis_delivery::BoxFuture<'_, Result<(), portcullis_queue::SpoolError>> {
        Box::pin(async { Err(portcullis_queue::SpoolError::Stopped) })
    }

    fn enqueue_held<'a>(
        &'a self,
        _: portcullis_queue::Envelope,
        _: Arc<Vec<u8>>,
        _: &'a str,
    ) -> portcullis_delivery::BoxFuture<'a, Result<(), portcullis_queue::SpoolError>> {
        Box::pin(async { Err(portcullis_queue::SpoolError::Stopped) })
    }

    fn bounce<'a>(
        &'a self,
        _: &'a portcullis_queue::StoredMessage,
        _: &'a [portcullis_queue::Bounce],
    ) -> portcullis_delivery::BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    fn hold_account<'a>(
        &'a self,
        _: &'a str,
        _: bool,
    ) -> portcullis_delivery::BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn messages_of<'a>(
        &'a self,
        _: &'a str,
    ) -> portcullis_delivery::BoxFuture<'a, (Vec<String>, Vec<String>)> {
        Box::pin(async { (Vec::new(), Vec::new()) })
    }
}
