//! Operators' changes handed to a running server as files in
//! `DATA/state/commands/`, and the server's housekeeping loop.

use crate::Store;
use crate::lock::commands_dir;
use portcullis_admission::StateCommand;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::{info, warn};

/// The server's housekeeping, every second: operators' commands from the
/// CLI, the sweep, and (at most every 5 s, or at once after a command)
/// the snapshot.
pub async fn maintain(state: Store, data_dir: PathBuf) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut since_snapshot = 0u32;
    loop {
        tick.tick().await;
        let answers = apply_commands(&state, &commands_dir(&data_dir)).await;
        since_snapshot += 1;
        if !answers.is_empty() || since_snapshot >= 5 {
            since_snapshot = 0;
            if let Err(e) = state.maintain() {
                warn!(event = "state_snapshot_failed", error = %e);
            }
        }
        // Answered only now, so a CLI that reads the snapshot next sees
        // its change.
        for (path, text) in answers {
            let _ = std::fs::write(path.with_extension("done"), text);
            let _ = std::fs::remove_file(&path);
        }
    }
}

async fn apply_commands(state: &Store, dir: &Path) -> Vec<(PathBuf, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    let mut answers = Vec::new();
    for path in names {
        let outcome = match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<StateCommand>(&b).map_err(|e| e.to_string()))
        {
            Ok(cmd) => {
                info!(event = "state_command", command = ?cmd);
                state.apply(&cmd).await
            }
            Err(e) => Err(format!("unreadable command: {e}")),
        };
        let text = match outcome {
            Ok(()) => "ok".to_owned(),
            Err(e) => e,
        };
        answers.push((path, text));
    }
    answers
}
