//! The report mailbox as a destination: mail for `[dmarc]
//! report_mailbox` (RFC 7489 §7.2 and RFC 8460 §3 `rua` addresses that
//! name us) goes to the server's report intake instead of a Maildir.

use super::Router;
use crate::outcome::{Answer, RcptOutcome, Status};
use crate::{BoxFuture, Parcel};

/// Where mail for `[dmarc] report_mailbox` is read and stored (the
/// server's report store). `Ok` once the message is durably kept, as a
/// report or set aside as malformed; `Err` only when it could not be kept.
pub trait ReportIntake: Send + Sync {
    fn take<'a>(&'a self, parcel: &'a Parcel) -> BoxFuture<'a, Result<(), String>>;
}

impl Router {
    /// One intake for the message, whatever the number of recipients it
    /// names the report mailbox with. Stored (as a report or set aside
    /// as malformed) is delivered: a report is never bounced to its
    /// reporter nor retried for being bad; only our own failure to store
    /// it is temporary.
    pub(super) async fn to_reports(&self, parcel: &Parcel, n: usize) -> Vec<RcptOutcome> {
        let outcome = match &self.reports {
            Some(intake) => match intake.take(parcel).await {
                Ok(()) => RcptOutcome::Delivered(Answer::new(Status(2, 0, 0), "report stored")),
                Err(why) => RcptOutcome::Temporary(Answer::new(Status(4, 3, 0), why)),
            },
            None => {
                RcptOutcome::Temporary(Answer::new(Status(4, 3, 0), "no report intake is running"))
            }
        };
        vec![outcome; n]
    }
}

#[cfg(test)]
mod tests {
    use crate::router::tests::{parcel, to};
    use crate::{BoxFuture, MxResolver, Route, Router};
    use crate::{Courier, Destination, Mailboxes, MaildirStore, Parcel, RcptOutcome};
    use std::sync::{Arc, Mutex};

    struct NoDns;
    impl MxResolver for NoDns {
        fn route<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Route> {
            Box::pin(async { Route::NoSuchDomain })
        }
    }

    /// Keeps the ids it was handed; fails when told to.
    struct Intake(Mutex<Vec<String>>, bool);
    impl super::ReportIntake for Intake {
        fn take<'a>(&'a self, p: &'a Parcel) -> BoxFuture<'a, Result<(), String>> {
            self.0.lock().unwrap().push(p.id.clone());
            let ok = self.1;
            Box::pin(async move { if ok { Ok(()) } else { Err("disk full".into()) } })
        }
    }

    fn router(intake: Arc<Intake>) -> Router {
        let root = std::env::temp_dir().join(format!("pc-router-reports-{}", std::process::id()));
        let mut c =
            portcullis_config::Config::embedded_default(root.clone(), "mx.local.test".into());
        c.local_domains = vec!["local.test".into()];
        c.dmarc.report_mailbox = Some("dmarc@reports.test".into());
        let boxes = Mailboxes::start(MaildirStore::new(root, "mx.local.test")).unwrap();
        Router::new(&c, boxes, Arc::new(NoDns))
            .unwrap()
            .with_reports(intake)
    }

    #[tokio::test]
    async fn report_mailbox_goes_to_the_intake_once_even_in_another_domain() {
        let intake = Arc::new(Intake(Mutex::default(), true));
        let r = router(intake.clone());
        let to = to(&[
            "DMARC@reports.test",
            "alice@local.test",
            "dmarc@reports.test",
        ]);
        let legs = r.legs(&to);
        let leg = legs
            .iter()
            .find(|l| l.destination == Destination::Reports)
            .unwrap();
        assert_eq!(leg.members, vec![0, 2]);
        let out = r.carry(&parcel(), &to, leg).await;
        assert!(
            out.iter().all(|o| matches!(o, RcptOutcome::Delivered(_))),
            "{out:?}"
        );
        assert_eq!(*intake.0.lock().unwrap(), vec!["ID1".to_owned()]);
    }

    #[tokio::test]
    async fn failing_to_store_a_report_is_temporary() {
        let r = router(Arc::new(Intake(Mutex::default(), false)));
        let to = to(&["dmarc@reports.test"]);
        let legs = r.legs(&to);
        let out = r.carry(&parcel(), &to, &legs[0]).await;
        assert!(matches!(&out[0], RcptOutcome::Temporary(a) if a.text.contains("disk full")));
    }
}
