//! The reload SIGHUP asks for (the binary listens for the signals; a
//! test calls [`crate::Server::reload`]): the configuration and the
//! certificates.
//!
//! A reload changes what new connections get: limits, classes, policies,
//! DNS lists, certificates. Listeners, the data directory, the state
//! backend, `[acme]` and the HTTP address stay as they were started (a
//! restart changes those; the log says so). A file with a mistake is
//! refused as a whole, named with file, line and key, and the running
//! configuration stays.

use crate::Context;
use portcullis_config::Config;
use tracing::{error, info, warn};

/// SIGHUP's action: read the config file again and put it in force for
/// new connections (the binary listens for the signal).
pub(crate) fn reload(ctx: &Context) {
    let Some(path) = &ctx.config_path else {
        // No file to read again, but the certificate is a file: an
        // operator who put a real one in DATA/tls in place of the
        // generated one gets it without a restart.
        let config = ctx.config();
        reload_tls(ctx, &config);
        info!(
            event = "reloaded",
            "running on the embedded default: certificates reloaded"
        );
        return;
    };
    let new = match portcullis_config::load(path) {
        Ok(c) => c,
        Err(e) => {
            error!(event = "reload_failed", error = %e, "keeping the running configuration");
            return;
        }
    };
    let old = ctx.config();
    let new = keep_what_needs_a_restart(&old, new);
    reload_tls(ctx, &new);
    ctx.inbound
        .admission
        .set_policy(portcullis_admission::Policy::from_config(&new));
    ctx.config.set(new);
    info!(event = "reloaded", path = %path.display(), "new connections use the new configuration");
}

/// New connections get the certificate and key `config` names; a pair
/// that does not load leaves the running one in place.
fn reload_tls(ctx: &Context, config: &Config) {
    match crate::tls::reload(config) {
        Ok(cert) => ctx.certs.set(cert),
        Err(e) => {
            warn!(
                event = "reload_tls_failed",
                error = format!("{e:#}"),
                "keeping the running certificates"
            )
        }
    }
}

/// The new config, with the parts a running server cannot change taken
/// from the old one (and a warning for each that differed).
fn keep_what_needs_a_restart(old: &Config, new: Config) -> Config {
    let differs = [
        ("listener", old.listeners != new.listeners),
        ("data_dir", old.data_dir != new.data_dir),
        ("http.bind", old.http_bind != new.http_bind),
        (
            "state",
            old.state_backend != new.state_backend || old.redis != new.redis,
        ),
        (
            "limits.max_sessions",
            old.limits.max_sessions != new.limits.max_sessions,
        ),
        ("user", old.user != new.user),
        // The router and the report store are made at start with these.
        (
            "dmarc.report_mailbox",
            old.dmarc.report_mailbox != new.dmarc.report_mailbox
                || old.dmarc.report_max_bytes != new.dmarc.report_max_bytes
                || old.dmarc.report_max_ratio != new.dmarc.report_max_ratio,
        ),
        // The ACME task is started (or not) with the server.
        ("acme", old.acme != new.acme),
        // So is the kernel's table, and the capability it needs is kept
        // (or given up) when the server drops to `user`.
        (
            "admission.kernel_blocklist",
            old.admission.kernel_blocklist != new.admission.kernel_blocklist,
        ),
        // The milters and their connection bounds are made at start.
        ("milter", old.milters != new.milters),
    ];
    for (key, changed) in differs {
        if changed {
            warn!(
                event = "reload_needs_restart",
                key, "changed, but takes effect only after a restart"
            );
        }
    }
    Config {
        listeners: old.listeners.clone(),
        data_dir: old.data_dir.clone(),
        http_bind: old.http_bind,
        state_backend: old.state_backend,
        redis: old.redis.clone(),
        user: old.user.clone(),
        acme: old.acme.clone(),
        milters: old.milters.clone(),
        limits: portcullis_config::Limits {
            max_sessions: old.limits.max_sessions,
            ..new.limits.clone()
        },
        dmarc: portcullis_config::DmarcSettings {
            report_mailbox: old.dmarc.report_mailbox.clone(),
            report_max_bytes: old.dmarc.report_max_bytes,
            report_max_ratio: old.dmarc.report_max_ratio,
            ..new.dmarc.clone()
        },
        admission: portcullis_config::Admission {
            kernel_blocklist: old.admission.kernel_blocklist,
            ..new.admission.clone()
        },
        ..new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_mailbox_changes_only_with_a_restart() {
        let old = Config::embedded_default(std::env::temp_dir(), "mx.test".into());
        let mut new = old.clone();
        new.dmarc.report_mailbox = Some("rua@mx.test".into());
        new.dmarc.send_reports = !old.dmarc.send_reports;
        let kept = keep_what_needs_a_restart(&old, new);
        assert_eq!(kept.dmarc.report_mailbox, None);
        assert_eq!(kept.dmarc.send_reports, !old.dmarc.send_reports);
    }

    #[test]
    fn kernel_blocklist_changes_only_with_a_restart() {
        let old = Config::embedded_default(std::env::temp_dir(), "mx.test".into());
        let mut new = old.clone();
        new.admission.kernel_blocklist = portcullis_config::KernelBlocklistMode::Off;
        new.admission.block_secs = old.admission.block_secs + 1;
        let kept = keep_what_needs_a_restart(&old, new);
        assert_eq!(
            kept.admission.kernel_blocklist,
            old.admission.kernel_blocklist
        );
        assert_eq!(kept.admission.block_secs, old.admission.block_secs + 1);
    }
}
