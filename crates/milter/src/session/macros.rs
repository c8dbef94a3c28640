//! The macros a session sends (libmilter's symbols): those of the
//! connection, and at each stage only what the milter asked for.

use super::{Session, State};
use crate::client::Link;
use crate::proto::Stage;

/// Names as libmilter lists them: `i` and `{i}` are the same macro.
fn same_macro(a: &str, b: &str) -> bool {
    a.trim_start_matches('{').trim_end_matches('}')
        == b.trim_start_matches('{').trim_end_matches('}')
}

impl Session {
    /// Macros we send at a stage: ours, narrowed to what the milter asked
    /// for (SETSYMLIST) where it did.
    pub(super) fn macros(
        &self,
        link: &Link,
        stage: Stage,
        ours: Vec<(String, String)>,
    ) -> Vec<(String, String)> {
        match link.negotiated.macros_for(stage) {
            Some(wanted) => ours
                .into_iter()
                .filter(|(k, _)| wanted.iter().any(|w| same_macro(w, k)))
                .collect(),
            None => ours,
        }
    }

    pub(super) fn connect_macros(&self, entry: usize) -> Vec<(String, String)> {
        let c = &self.client;
        let name = c
            .name
            .clone()
            .unwrap_or_else(|| format!("[{}]", c.addr.ip()));
        let mut v = vec![
            ("j".to_owned(), c.hostname.clone()),
            ("{daemon_name}".to_owned(), c.daemon_name.clone()),
            (
                "v".to_owned(),
                format!("portcullis {}", env!("CARGO_PKG_VERSION")),
            ),
            ("{client_addr}".to_owned(), c.addr.ip().to_string()),
            ("{client_port}".to_owned(), c.addr.port().to_string()),
            ("{client_name}".to_owned(), name.clone()),
            ("_".to_owned(), format!("{name} [{}]", c.addr.ip())),
        ];
        v.extend(self.milters.entries[entry].0.macros.iter().cloned());
        v
    }

    pub(super) fn macros_for_link(
        &self,
        i: usize,
        stage: Stage,
        ours: Vec<(String, String)>,
    ) -> Vec<(String, String)> {
        match &self.links[i].state {
            State::Open(l) => self.macros(l, stage, ours),
            _ => ours,
        }
    }
}
