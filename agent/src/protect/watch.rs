//! Keeps the protected paths marked: rescans when a watched directory changes (inotify) and on
//! a fixed interval. The interval bounds how long a replaced file can stay unmarked when
//! inotify misses it (a directory created after start, an overflowed event queue).

use std::{
    collections::BTreeSet,
    os::fd::{AsFd, AsRawFd, RawFd},
    path::{Path, PathBuf},
    time::Duration,
};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;

use super::Protector;

/// The inotify instance, as tokio needs it (nix's type offers `AsFd` only).
struct Watcher(Inotify);

impl AsRawFd for Watcher {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Events after which a protected name may point at a different or new inode.
fn watch_flags() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
}

/// The directories whose entries decide what a pattern matches: the deepest ancestor without
/// glob characters. Watching it catches a protected name appearing or being replaced.
pub fn watch_dirs(patterns: &[String]) -> BTreeSet<PathBuf> {
    patterns
        .iter()
        .filter_map(|pattern| {
            let path = Path::new(pattern);
            let mut dir = path.parent()?;
            while dir.to_string_lossy().contains(['*', '?', '[']) {
                dir = dir.parent()?;
            }
            Some(dir.to_owned())
        })
        .collect()
}

/// Runs until the agent stops. Rescan errors are logged loudly and retried on the next
/// trigger; the protection already in place stays. New patterns (a config reload) arrive on
/// `patterns` and are applied by an immediate rescan.
pub async fn keep_marked(
    mut protector: Protector,
    interval: Duration,
    mut patterns: tokio::sync::watch::Receiver<Vec<String>>,
) {
    let mut dirs = watch_dirs(protector.patterns());
    let inotify = match Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
        .map_err(std::io::Error::from)
        // SAFETY: the Inotify owns its fd and keeps it open, unchanged, until it is dropped
        // together with the AsyncFd.
        .and_then(|inotify| {
            unsafe { AsyncFd::register(Watcher(inotify)) }.map_err(std::io::Error::from)
        }) {
        Ok(fd) => Some(fd),
        Err(err) => {
            tracing::warn!(error = %err, interval_secs = interval.as_secs(), "inotify unavailable; replaced protected files are re-marked by the periodic rescan only");
            None
        }
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if let Some(inotify) = &inotify {
            add_watches(&inotify.get_ref().0, &dirs);
        }
        rescan(&mut protector);
        tokio::select! {
            _ = ticker.tick() => {}
            _ = changed(inotify.as_ref()) => {
                // Let a burst of events (an editor's write, fsync, rename) settle into one pass.
                tokio::time::sleep(Duration::from_millis(20)).await;
                if let Some(inotify) = &inotify {
                    drain(inotify);
                }
            }
            update = patterns.changed() => {
                if update.is_err() {
                    // The daemon is shutting down; keep the marks as they are.
                    std::future::pending::<()>().await;
                }
                let new = patterns.borrow_and_update().clone();
                dirs = watch_dirs(&new);
                protector.set_patterns(new);
            }
        }
    }
}

fn rescan(protector: &mut Protector) {
    match protector.scan() {
        Ok(report) => {
            for path in &report.newly_marked {
                tracing::info!(path = %path.display(), "protected path now has a new inode; marked");
            }
            for path in &report.unprotected {
                tracing::warn!(path = %path.display(), "no longer a protected path; mark removed");
            }
        }
        Err(err) => {
            tracing::error!(
                error = format!("{err:#}"),
                "rescan of protected paths failed; files named since the last good scan may be unprotected"
            );
        }
    }
}

fn add_watches(inotify: &Inotify, dirs: &BTreeSet<PathBuf>) {
    for dir in dirs {
        // A directory that does not exist yet is covered by the periodic rescan; adding a
        // watch that exists already is a no-op.
        let _ = inotify.add_watch(dir, watch_flags());
    }
}

async fn changed(inotify: Option<&AsyncFd<Watcher>>) {
    match inotify {
        Some(fd) => {
            if let Ok(mut guard) = fd.readable().await {
                guard.clear_ready();
            }
        }
        None => std::future::pending().await,
    }
}

fn drain(inotify: &AsyncFd<Watcher>) {
    while let Ok(events) = inotify.get_ref().0.read_events() {
        if events.is_empty() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_the_deepest_literal_directory() {
        let dirs = watch_dirs(&[
            "/etc/airflow/airflow.cfg".into(),
            "/srv/keys/*.pem".into(),
            "/srv/k*/x/y.pem".into(),
            "/etc/airflow/webserver.cfg".into(),
        ]);
        let dirs: Vec<_> = dirs.iter().map(|d| d.display().to_string()).collect();
        assert_eq!(dirs, ["/etc/airflow", "/srv", "/srv/keys"]);
    }
}
