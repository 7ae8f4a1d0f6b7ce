//! The socket files that tasks in domains may connect and send to although no domain made
//! them: the agent's own API socket (a task must be able to ask `whoami` and seal its
//! children) and the node's `sockets.reachable` paths.
//!
//! The kernel side judges a socket by the inode it is bound to (ebpf/programs/src/sockets.rs),
//! so a service that unlinks and re-creates its socket gets a new, unmarked inode. The marks
//! are therefore renewed on every rescan tick and on every config reload.

use std::{
    collections::HashMap,
    fs::File,
    os::{
        fd::AsFd,
        unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
    time::Duration,
};

use crate::protect::InodeMarker;

/// A device and inode number: which socket file a path named when it was marked.
type InodeId = (u64, u64);

pub struct ReachableSockets {
    marker: Box<dyn InodeMarker>,
    marked: HashMap<PathBuf, InodeId>,
}

/// Why a path was not marked.
#[derive(Debug, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

impl ReachableSockets {
    pub fn new(marker: Box<dyn InodeMarker>) -> Self {
        Self {
            marker,
            marked: HashMap::new(),
        }
    }

    /// Marks the socket file at each of `paths` (following symlinks) and unmarks the socket
    /// files of paths marked before but no longer listed. Returns the paths it skipped.
    pub fn mark(&mut self, paths: &[PathBuf]) -> Vec<Skipped> {
        let mut skipped = Vec::new();
        let previously = std::mem::take(&mut self.marked);
        for path in paths {
            match self.mark_one(path) {
                Ok(id) => {
                    self.marked.insert(path.clone(), id);
                }
                Err(reason) => skipped.push(Skipped {
                    path: path.clone(),
                    reason,
                }),
            }
        }
        for (path, id) in previously {
            if self.marked.contains_key(&path) {
                continue;
            }
            // Only the inode still at the old path and marked from it: a socket file that
            // moved elsewhere or was replaced is not this agent's to unmark.
            if let Ok(file) = open_socket(&path)
                && file_id(&file) == Some(id)
                && let Err(err) = self.marker.unmark(file.as_fd())
            {
                tracing::warn!(path = %path.display(), error = %err, "could not unmark a socket file dropped from sockets.reachable");
            }
        }
        skipped
    }

    fn mark_one(&mut self, path: &Path) -> Result<InodeId, String> {
        let file = open_socket(path)?;
        let id = file_id(&file).ok_or("cannot read its status")?;
        self.marker
            .mark(file.as_fd())
            .map_err(|err| format!("the kernel refused the mark: {err}"))?;
        Ok(id)
    }
}

/// An O_PATH descriptor of the socket file at `path`: it names the inode without connecting.
fn open_socket(path: &Path) -> Result<File, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)
        .map_err(|err| err.to_string())?;
    let meta = file.metadata().map_err(|err| err.to_string())?;
    if !meta.file_type().is_socket() {
        return Err("not a socket".to_owned());
    }
    Ok(file)
}

fn file_id(file: &File) -> Option<InodeId> {
    file.metadata().ok().map(|meta| (meta.dev(), meta.ino()))
}

/// Renews the marks every `interval`, and at once when the configured paths change.
pub async fn keep_marked(
    mut sockets: ReachableSockets,
    interval: Duration,
    mut paths: tokio::sync::watch::Receiver<Vec<PathBuf>>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported: Vec<Skipped> = Vec::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = paths.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let current = paths.borrow_and_update().clone();
        let skipped = sockets.mark(&current);
        // Said once per change, not on every tick.
        for skip in skipped.iter().filter(|s| !reported.contains(s)) {
            tracing::warn!(path = %skip.path.display(), reason = %skip.reason, "reachable socket not marked; tasks in domains cannot connect to it");
        }
        reported = skipped;
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io,
        os::{fd::BorrowedFd, unix::net::UnixListener},
        sync::{Arc, Mutex},
    };

    use super::*;

    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<(&'static str, InodeId)>>>);

    impl InodeMarker for Recorder {
        fn mark(&mut self, inode: BorrowedFd<'_>) -> io::Result<()> {
            let meta = File::from(inode.try_clone_to_owned()?).metadata()?;
            self.0
                .lock()
                .unwrap()
                .push(("mark", (meta.dev(), meta.ino())));
            Ok(())
        }

        fn unmark(&mut self, inode: BorrowedFd<'_>) -> io::Result<()> {
            let meta = File::from(inode.try_clone_to_owned()?).metadata()?;
            self.0
                .lock()
                .unwrap()
                .push(("unmark", (meta.dev(), meta.ino())));
            Ok(())
        }
    }

    fn id_of(path: &Path) -> InodeId {
        let meta = std::fs::metadata(path).unwrap();
        (meta.dev(), meta.ino())
    }

    #[test]
    fn marks_sockets_through_symlinks_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("log.sock");
        let _listener = UnixListener::bind(&socket).unwrap();
        let link = dir.path().join("log");
        std::os::unix::fs::symlink(&socket, &link).unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, b"x").unwrap();
        let missing = dir.path().join("missing");

        let recorder = Recorder::default();
        let mut sockets = ReachableSockets::new(Box::new(recorder.clone()));
        let skipped = sockets.mark(&[link.clone(), plain.clone(), missing.clone()]);

        assert_eq!(*recorder.0.lock().unwrap(), vec![("mark", id_of(&socket))]);
        let reasons: Vec<_> = skipped
            .iter()
            .map(|s| (s.path.clone(), s.reason.as_str()))
            .collect();
        assert_eq!(reasons[0], (plain, "not a socket"));
        assert_eq!(reasons[1].0, missing);
        assert!(reasons[1].1.contains("No such file"), "{reasons:?}");
    }

    #[test]
    fn a_dropped_path_is_unmarked_a_replaced_socket_is_marked_again() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.sock"), dir.path().join("b.sock"));
        let _a = UnixListener::bind(&a).unwrap();
        let first_b = UnixListener::bind(&b).unwrap();
        let recorder = Recorder::default();
        let mut sockets = ReachableSockets::new(Box::new(recorder.clone()));
        assert!(sockets.mark(&[a.clone(), b.clone()]).is_empty());

        // The service behind b re-creates its socket: the new inode is marked on the next pass.
        drop(first_b);
        std::fs::remove_file(&b).unwrap();
        let _b = UnixListener::bind(&b).unwrap();
        recorder.0.lock().unwrap().clear();
        assert!(sockets.mark(&[a.clone(), b.clone()]).is_empty());
        let log = recorder.0.lock().unwrap().clone();
        assert!(log.contains(&("mark", id_of(&b))), "{log:?}");

        // a is dropped from the config: its socket file is unmarked.
        recorder.0.lock().unwrap().clear();
        assert!(sockets.mark(std::slice::from_ref(&b)).is_empty());
        let log = recorder.0.lock().unwrap().clone();
        assert_eq!(log, vec![("mark", id_of(&b)), ("unmark", id_of(&a))]);
    }
}
