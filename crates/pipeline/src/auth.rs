//! AUTH on the submission ports: the credentials checked (with the
//! throttle), and on success a session slot held for the account until
//! the connection ends; the client's range is remembered as one whose
//! users log in, which escalation never blocks.

use crate::{Connection, StageResult};
use portcullis_smtp::Credentials;

impl Connection {
    /// Goes on with the identity authenticated as.
    pub async fn authenticate(&mut self, c: Credentials) -> StageResult<String> {
        self.auth_mechanism = c.mechanism;
        let inbound = &self.inbound;
        let state = &inbound.admission.state;
        let (outcome, slot) = inbound
            .submission
            .authenticate(state, self.peer.ip(), c)
            .await;
        if let Ok(account) = &outcome {
            inbound.admission.logged_in(self.peer.ip()).await;
            let now = portcullis_config::clock::now_secs();
            let login = portcullis_containment::observe::login(self.peer.ip(), now);
            let rules = &self.config.containment;
            inbound
                .containment
                .observe(rules, account, "", &login, now)
                .await;
        }
        self.account = slot;
        outcome
    }
}
