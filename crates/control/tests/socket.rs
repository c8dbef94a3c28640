//! The control socket end to end in one process: a live queue and state
//! behind it, the CLI's blocking client in front.

use portcullis_admission::StateCommand;
use portcullis_control::{Client, ClientError, Control, ControlError, Request};
use portcullis_delivery::{
    Addressee, Answer, BoxFuture, Courier, Leg, Parcel, RcptOutcome, Status,
};
use portcullis_queue::{
    Envelope, Queue, QueueSettings, QueuedRecipient, Schedule, Spool, SpoolOptions,
};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Every delivery is deferred: messages stay in the queue.
struct Later;

impl Courier for Later {
    fn legs(&self, to: &[Addressee]) -> Vec<Leg> {
        vec![Leg {
            name: "all".into(),
            destination: portcullis_delivery::Destination::Remote("far.test".into()),
            members: (0..to.len()).collect(),
        }]
    }

    fn carry<'a>(
        &'a self,
        _: &'a Parcel,
        _: &'a [Addressee],
        leg: &'a Leg,
    ) -> BoxFuture<'a, Vec<RcptOutcome>> {
        let o = RcptOutcome::Temporary(Answer::new(Status(4, 0, 0), "451 later"));
        Box::pin(async move { vec![o; leg.members.len()] })
    }
}

fn data_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pc-control-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn serving(name: &str) -> (PathBuf, Queue) {
    let dir = data_dir(name);
    let (spool, pending) = Spool::open(&dir.join("spool"), SpoolOptions::default()).unwrap();
    let settings = QueueSettings {
        hostname: "mx.test".into(),
        schedule: Schedule::from_config(&portcullis_config::Delivery::default()),
        max_active: 4,
        suppression: None,
    };
    let (queue, _) = Queue::start(spool, pending, Arc::new(Later), settings, Arc::default());
    let state = portcullis_state::Store::in_memory(Default::default());
    let control = Control {
        queue: queue.clone(),
        state,
        files: None,
        jobs: Default::default(),
        accounts: None,
        sites: None,
    };
    let listener = portcullis_control::bind(&dir).unwrap();
    tokio::spawn(control.serve(listener));
    (dir, queue)
}

async fn queued(q: &Queue) -> String {
    let env = Envelope {
        id: q.new_id(),
        sender: "a@origin.test".into(),
        recipients: vec![QueuedRecipient {
            address: "b@far.test".into(),
            ..Default::default()
        }],
        // Fresh: not yet past its lifetime.
        received_at: portcullis_config::clock::now_secs(),
        ..Default::default()
    };
    let id = env.id.clone();
    q.enqueue(env, Arc::new(b"x\r\n".to_vec())).await.unwrap();
    id
}

/// The CLI's client is blocking: run it off the runtime's threads.
async fn ask(dir: &std::path::Path, r: Request) -> Result<serde_json::Value, ClientError> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        Client::connect(&dir).expect("a server answers").request(&r)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_is_held_released_and_deleted_through_the_socket() {
    let (dir, q) = serving("queue").await;
    let id = queued(&q).await;
    ask(&dir, Request::QueueHold { id: id.clone() })
        .await
        .unwrap();
    assert!(dir.join("spool/hold").join(&id).exists());
    ask(&dir, Request::QueueRelease { id: id.clone() })
        .await
        .unwrap();
    assert!(!dir.join("spool/hold").join(&id).exists());
    ask(&dir, Request::QueueDelete { id: id.clone() })
        .await
        .unwrap();
    let again = ask(&dir, Request::QueueDelete { id: id.clone() }).await;
    assert!(
        matches!(
            again,
            Err(ClientError::Refused(ControlError::NoSuchMessage(_)))
        ),
        "{again:?}"
    );
    tokio::time::timeout(Duration::from_secs(5), async {
        while q.spool().live_count() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the deleted message is completed in the spool");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_block_made_through_the_socket_is_in_the_live_state() {
    let (dir, _) = serving("state").await;
    let cmd = StateCommand::Block {
        range: "192.0.2.0/24".parse().unwrap(),
        secs: 60,
        reason: "test".into(),
    };
    ask(&dir, Request::StateApply { command: cmd })
        .await
        .unwrap();
    let list = ask(&dir, Request::StateBlocklist).await.unwrap();
    assert_eq!(list[0][0], "192.0.2.0/24", "{list}");
    let r = ask(
        &dir,
        Request::StateReputation {
            key: "domain:nobody.test".into(),
        },
    )
    .await;
    assert!(
        matches!(r, Err(ClientError::Refused(ControlError::NoReputation(_)))),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_gets_an_error_answer_and_the_connection_closes() {
    let (dir, _) = serving("garbage").await;
    let path = portcullis_control::socket_path(&dir);
    let answer = tokio::task::spawn_blocking(move || {
        let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
        s.write_all(b"{\"op\":\"rm -rf\"}\n").unwrap();
        let mut line = String::new();
        let mut r = BufReader::new(s);
        r.read_line(&mut line).unwrap();
        let mut rest = String::new();
        let closed = r.read_line(&mut rest).unwrap() == 0;
        (line, closed)
    })
    .await
    .unwrap();
    assert!(answer.0.contains("not a request"), "{}", answer.0);
    assert!(answer.1, "closed after garbage");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_server_cannot_take_a_live_socket() {
    let (dir, _) = serving("twice").await;
    assert!(matches!(
        portcullis_control::bind(&dir),
        Err(portcullis_control::SocketError::InUse(_))
    ));
}

#[test]
fn no_server_means_no_client() {
    assert!(Client::connect(&data_dir("none")).is_none());
}
