//! `suppression` and `delivery`: the operator's view of outbound
//! manners. The suppression list is asked of the running server through
//! its control socket (it owns the embedded list), or read from the
//! state itself when no server runs; `delivery sites` asks the running
//! server for its sites; `delivery check` looks at our source addresses
//! in DNS.

use anyhow::bail;
use clap::Subcommand;
use portcullis_config::{Config, StateBackend};
use portcullis_control::Request;
use portcullis_shaping::Suppression;
use portcullis_shaping::suppress::date_time;

#[derive(Subcommand)]
pub enum SuppressionAction {
    /// Every suppressed address: when it bounced, until when, why.
    List,
    /// One address.
    Show {
        /// The suppressed address (e.g. gone@example.com).
        address: String,
    },
    /// Lift a suppression: mail to the address is accepted again.
    Del {
        /// The suppressed address.
        address: String,
    },
}

#[derive(Subcommand)]
pub enum DeliveryAction {
    /// The outbound sites the running server knows: limits, rate in
    /// force, pauses, last answers.
    Sites,
    /// Check each source address: forward-confirmed reverse DNS, the
    /// HELO name, and that our domains' SPF covers it.
    Check,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn line(e: &Suppression) -> String {
    format!(
        "{}  since {}  until {}  {}",
        e.address,
        date_time(e.since),
        date_time(e.until),
        e.reply
    )
}

pub fn suppression(action: SuppressionAction, config: &Config) -> anyhow::Result<()> {
    if let Some(mut c) = portcullis_control::Client::connect(&config.data_dir) {
        return match action {
            SuppressionAction::List => {
                let list: Vec<Suppression> =
                    serde_json::from_value(c.request(&Request::SuppressionList)?)?;
                list.iter().for_each(|e| println!("{}", line(e)));
                println!("{} address(es) suppressed", list.len());
                Ok(())
            }
            SuppressionAction::Show { address } => {
                let e: Suppression =
                    serde_json::from_value(c.request(&Request::SuppressionShow { address })?)?;
                println!("{}\nRCPT answer: 550 5.1.1 {}", line(&e), e.refusal());
                Ok(())
            }
            SuppressionAction::Del { address } => {
                c.request(&Request::SuppressionDel {
                    address: address.clone(),
                })?;
                println!("{address} is no longer suppressed");
                Ok(())
            }
        };
    }
    if config.state_backend == StateBackend::Embedded
        && portcullis_control::server_running(&config.data_dir)
    {
        bail!(
            "a server holds {} but does not answer on its control socket",
            config.data_dir.display()
        );
    }
    let store = portcullis_state::Store::open(config)?;
    let rt = runtime()?;
    match action {
        SuppressionAction::List => {
            let list = rt.block_on(store.suppressions());
            list.iter().for_each(|e| println!("{}", line(e)));
            println!("{} address(es) suppressed", list.len());
        }
        SuppressionAction::Show { address } => match rt.block_on(store.suppressed(&address)) {
            Some(e) => println!("{}\nRCPT answer: 550 5.1.1 {}", line(&e), e.refusal()),
            None => bail!("{address} is not suppressed"),
        },
        SuppressionAction::Del { address } => {
            if !rt.block_on(store.unsuppress(&address)) {
                bail!("{address} is not suppressed");
            }
            println!("{address} is no longer suppressed");
        }
    }
    Ok(())
}

pub fn delivery(action: DeliveryAction, config: &Config) -> anyhow::Result<()> {
    match action {
        DeliveryAction::Sites => {
            let Some(mut c) = portcullis_control::Client::connect(&config.data_dir) else {
                bail!("no server is running: sites live in the running server");
            };
            let sites: Vec<portcullis_shaping::SiteView> =
                serde_json::from_value(c.request(&Request::Sites)?)?;
            for s in &sites {
                let paused = match (&s.paused_until, &s.pause_reason) {
                    (Some(t), Some(why)) => format!(
                        "  paused until {} after {why}",
                        portcullis_shaping::pace::clock_time(*t)
                    ),
                    _ => String::new(),
                };
                println!(
                    "{}  connections {}/{}  rate {}/min  deferred {}{paused}",
                    s.name, s.connections, s.limits.max_connections, s.rate_per_minute, s.deferred
                );
            }
            println!("{} site(s)", sites.len());
            Ok(())
        }
        DeliveryAction::Check => {
            let problems = runtime()?.block_on(check(config))?;
            if problems > 0 {
                bail!("{problems} problem(s) to fix before mail from these addresses is welcome");
            }
            Ok(())
        }
    }
}

fn sources(config: &Config) -> Vec<std::net::IpAddr> {
    let d = &config.delivery;
    d.source_ipv4
        .map(Into::into)
        .into_iter()
        .chain(d.source_ipv6.map(Into::into))
        .collect()
}

/// `check-config`: each source address must be one of this host's (an
/// error otherwise), and what DNS says of it is shown as warnings.
pub fn check_sources(config: &Config) -> anyhow::Result<()> {
    for ip in sources(config) {
        if let Err(e) = std::net::TcpListener::bind((ip, 0)) {
            let key = if ip.is_ipv4() {
                "source_ipv4"
            } else {
                "source_ipv6"
            };
            bail!("[delivery] {key} = \"{ip}\": not an address of this host ({e})");
        }
    }
    if !sources(config).is_empty() {
        match runtime()?.block_on(check(config)) {
            Ok(0) => {}
            Ok(n) => println!("warning: {n} problem(s) with the source addresses (see above)"),
            Err(e) => println!("warning: the source addresses could not be checked: {e}"),
        }
    }
    Ok(())
}

/// `delivery check`: each source address in DNS; the number of problems.
async fn check(config: &Config) -> anyhow::Result<usize> {
    let d = &config.delivery;
    let sources = sources(config);
    if sources.is_empty() {
        println!(
            "no [delivery] source_ipv4 or source_ipv6: the system picks the source address; set them to check them"
        );
        return Ok(0);
    }
    let helo = d.helo_name.as_deref().unwrap_or(&config.hostname);
    let domains = config.local_domains.clone();
    let verifier =
        portcullis_server::verifier(config, &config.dns_nameservers, config.dns_timeout)?;
    let now = portcullis_config::clock::now_secs();
    let mut problems = 0;
    for ip in sources {
        let c = verifier.check_source(ip, helo, &domains, now).await;
        let found = c.problems(helo);
        if found.is_empty() {
            println!(
                "{ip}: ok (reverse name {}, SPF passes for {})",
                c.name.as_deref().unwrap_or("-"),
                domains.join(", ")
            );
        }
        for p in &found {
            println!("{p}");
        }
        problems += found.len();
    }
    Ok(problems)
}
