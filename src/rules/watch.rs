//! Tells `qunfa serve` when to reload the rules: on SIGHUP, or when a `*.toml` file in the
//! rules directory is created, changed, removed or renamed. Reloading itself (load, swap,
//! or keep the old rules and say why) is the caller's job.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::load::is_rules_file_name;

/// Why the rules should be read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadCause {
    /// The process received SIGHUP.
    Signal,
    /// A rules file changed on disk.
    FileChanged,
}

/// An editor's save is several events (truncate, write, rename, chmod); reloading once
/// they have been quiet this long reads the finished file, once.
const QUIET_PERIOD: Duration = Duration::from_millis(300);
/// A file rewritten continuously (a log mistakenly named `.toml`) still reloads this often.
const MAX_DELAY: Duration = Duration::from_secs(2);

/// Starts watching `dir` and SIGHUP until `cancel` fires. Must be called inside a tokio
/// runtime. If the file watcher cannot be created (inotify limits, a missing directory),
/// logs a warning and keeps SIGHUP working; if SIGHUP cannot be caught, file changes still
/// work. A reload that is already waiting in the channel absorbs later causes.
pub fn spawn_watcher(dir: PathBuf, cancel: CancellationToken) -> mpsc::Receiver<ReloadCause> {
    let (reload_tx, reload_rx) = mpsc::channel(4);
    let (event_tx, event_rx) = mpsc::channel(64);
    let watcher = start_file_watcher(&dir, event_tx);
    let hangup = match signal(SignalKind::hangup()) {
        Ok(hangup) => Some(hangup),
        Err(error) => {
            tracing::warn!(%error, "cannot catch SIGHUP; rules reload only when their files change");
            None
        }
    };
    tokio::spawn(run(watcher, event_rx, hangup, reload_tx, cancel));
    reload_rx
}

fn start_file_watcher(dir: &Path, events: mpsc::Sender<()>) -> Option<RecommendedWatcher> {
    let handler = move |result: notify::Result<notify::Event>| match result {
        // A full channel already holds a pending change; this one adds nothing.
        Ok(event) if is_relevant(&event) => drop(events.try_send(())),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "error from the rules directory watcher"),
    };
    let watching = notify::recommended_watcher(handler).and_then(|mut watcher| {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
        Ok(watcher)
    });
    match watching {
        Ok(watcher) => Some(watcher),
        Err(error) => {
            tracing::warn!(
                %error,
                rules.dir = %dir.display(),
                "cannot watch the rules directory; send SIGHUP to reload the rules"
            );
            None
        }
    }
}

/// Whether an event may have changed the rules. Kubernetes ConfigMap volumes update by
/// swapping a `..data` symlink, so that name counts too.
fn is_relevant(event: &notify::Event) -> bool {
    if event.need_rescan() {
        return true;
    }
    let changes_files = matches!(
        event.kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any
    );
    changes_files
        && event.paths.iter().any(|path| {
            path.file_name()
                .is_some_and(|name| is_rules_file_name(name) || name == "..data")
        })
}

async fn run(
    // Held so the OS watch lives exactly as long as this task.
    _watcher: Option<RecommendedWatcher>,
    mut events: mpsc::Receiver<()>,
    mut hangup: Option<Signal>,
    reloads: mpsc::Sender<ReloadCause>,
    cancel: CancellationToken,
) {
    loop {
        let cause = tokio::select! {
            () = cancel.cancelled() => return,
            Some(()) = next_hangup(&mut hangup) => ReloadCause::Signal,
            Some(()) = events.recv() => {
                if !settle(&mut events, &cancel).await {
                    return;
                }
                ReloadCause::FileChanged
            }
        };
        if let Err(mpsc::error::TrySendError::Closed(_)) = reloads.try_send(cause) {
            return;
        }
    }
}

async fn next_hangup(hangup: &mut Option<Signal>) -> Option<()> {
    match hangup {
        Some(hangup) => hangup.recv().await,
        None => std::future::pending().await,
    }
}

/// Waits until the directory has been quiet for [`QUIET_PERIOD`] (at most [`MAX_DELAY`]),
/// swallowing the events of the same burst. False when cancelled.
async fn settle(events: &mut mpsc::Receiver<()>, cancel: &CancellationToken) -> bool {
    let deadline = Instant::now() + MAX_DELAY;
    loop {
        let quiet_until = (Instant::now() + QUIET_PERIOD).min(deadline);
        tokio::select! {
            () = cancel.cancelled() => return false,
            () = tokio::time::sleep_until(quiet_until) => return true,
            event = events.recv() => {
                if event.is_none() || Instant::now() >= deadline {
                    return true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bounded wait for a real OS event.
    const WAIT: Duration = Duration::from_secs(5);
    /// Long enough for a debounced event to have arrived if one were coming.
    const SILENCE: Duration = Duration::from_millis(1000);

    /// The next file change, skipping SIGHUPs that a parallel test may have raised.
    async fn next_file_change(
        reloads: &mut mpsc::Receiver<ReloadCause>,
        within: Duration,
    ) -> Option<ReloadCause> {
        tokio::time::timeout(within, async {
            loop {
                match reloads.recv().await {
                    Some(ReloadCause::Signal) => continue,
                    other => return other,
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    #[test]
    fn only_changes_to_rules_files_matter() {
        use notify::event::{AccessKind, CreateKind, Flag, ModifyKind, RenameMode};
        let event =
            |kind, name: &str| notify::Event::new(kind).add_path(PathBuf::from("/r").join(name));
        assert!(is_relevant(&event(
            EventKind::Create(CreateKind::File),
            "a.toml"
        )));
        assert!(is_relevant(&event(
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            "a.toml"
        )));
        assert!(is_relevant(&event(
            EventKind::Create(CreateKind::Any),
            "..data"
        )));
        assert!(!is_relevant(&event(
            EventKind::Create(CreateKind::File),
            "a.txt"
        )));
        assert!(!is_relevant(&event(
            EventKind::Create(CreateKind::File),
            ".a.toml"
        )));
        assert!(!is_relevant(&event(
            EventKind::Access(AccessKind::Any),
            "a.toml"
        )));
        assert!(is_relevant(
            &notify::Event::new(EventKind::Other).set_flag(Flag::Rescan)
        ));
    }

    #[tokio::test]
    async fn a_burst_of_writes_to_a_toml_file_is_one_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cancel = CancellationToken::new();
        let mut reloads = spawn_watcher(dir.path().to_path_buf(), cancel.clone());
        let path = dir.path().join("inbound.toml");
        std::fs::write(&path, "[[inbound]]\n").expect("write");
        std::fs::write(&path, "[[inbound]]\nid = \"shell\"\n").expect("rewrite");
        assert_eq!(
            next_file_change(&mut reloads, WAIT).await,
            Some(ReloadCause::FileChanged)
        );
        assert_eq!(
            next_file_change(&mut reloads, SILENCE).await,
            None,
            "the burst reloads once"
        );
        cancel.cancel();
    }

    #[tokio::test]
    async fn other_files_do_not_reload() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cancel = CancellationToken::new();
        let mut reloads = spawn_watcher(dir.path().to_path_buf(), cancel.clone());
        std::fs::write(dir.path().join("notes.txt"), "hello").expect("write");
        std::fs::write(dir.path().join(".#rules.toml"), "lock").expect("write");
        assert_eq!(next_file_change(&mut reloads, SILENCE).await, None);
        cancel.cancel();
    }

    #[tokio::test]
    async fn removing_a_toml_file_reloads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("commands.toml");
        std::fs::write(&path, "").expect("write");
        let cancel = CancellationToken::new();
        let mut reloads = spawn_watcher(dir.path().to_path_buf(), cancel.clone());
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(
            next_file_change(&mut reloads, WAIT).await,
            Some(ReloadCause::FileChanged)
        );
        cancel.cancel();
    }

    #[tokio::test]
    async fn cancelling_closes_the_channel() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cancel = CancellationToken::new();
        let mut reloads = spawn_watcher(dir.path().to_path_buf(), cancel.clone());
        cancel.cancel();
        let closed =
            tokio::time::timeout(WAIT, async { while reloads.recv().await.is_some() {} }).await;
        assert!(closed.is_ok(), "the watcher task ends when cancelled");
    }

    #[tokio::test]
    async fn a_missing_directory_still_reloads_on_sighup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cancel = CancellationToken::new();
        let mut reloads = spawn_watcher(dir.path().join("missing"), cancel.clone());
        let status = std::process::Command::new("kill")
            .args(["-HUP", &std::process::id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
        let cause = tokio::time::timeout(WAIT, reloads.recv()).await;
        assert_eq!(cause.ok().flatten(), Some(ReloadCause::Signal));
        cancel.cancel();
    }
}
