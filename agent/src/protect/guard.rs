//! The directories on the protected patterns' way, guarded in the kernel.
//!
//! The kernel judges a new name by its parent directory's GUARDED_DIR entry: the trie nodes
//! the directory's entries are compared with (bulkhead_common::names). The programs guard the
//! directories they see created or moved onto a pattern's way; this walk guards the ones that
//! exist when the agent starts or the patterns change, and keeps every guarded directory open
//! so that its entry, which lives in the inode's storage, cannot be dropped with the inode.
//!
//! The walk follows symlinks, as the scan does: a directory reached through a symlink on a
//! pattern's way is guarded under its real name too. Where the same directory is reached by
//! several patterns (`/srv/*/key` and `/srv/a/cert`), it guards the union of their nodes.

use std::{
    collections::HashMap,
    ffi::OsStr,
    fs::File,
    io,
    os::{
        fd::{AsFd, BorrowedFd},
        unix::{ffi::OsStrExt, fs::MetadataExt},
    },
    path::{Path, PathBuf},
};

use anyhow::Context;
use bulkhead_common::names::NameNode;

use super::{
    name_trie::{Component, NameTrie, ids},
    scan::{InodeId, open_path},
};

/// Where the trie and the guards go: the kernel's NAME_NODES and GUARDED_DIR maps in the
/// agent, a recorder in tests.
pub trait GuardStore: Send {
    /// Replaces the node table (unused ids are written as empty nodes).
    fn set_nodes(&mut self, nodes: &[NameNode]) -> io::Result<()>;
    fn guard(&mut self, dir: BorrowedFd<'_>, children: u64) -> io::Result<()>;
    fn unguard(&mut self, dir: BorrowedFd<'_>) -> io::Result<()>;
}

struct Guarded {
    path: PathBuf,
    children: u64,
    pin: File,
}

pub struct GuardedDirs {
    trie: NameTrie,
    store: Box<dyn GuardStore>,
    held: HashMap<InodeId, Guarded>,
}

impl GuardedDirs {
    /// Writes the trie of `patterns` into the kernel's node table; nothing is guarded until
    /// [`refresh`](Self::refresh).
    pub fn new(patterns: &[String], mut store: Box<dyn GuardStore>) -> anyhow::Result<Self> {
        let trie = NameTrie::build(patterns).map_err(anyhow::Error::msg)?;
        store
            .set_nodes(&trie.kernel_nodes())
            .context("writing the protected names' node table into the kernel")?;
        Ok(Self {
            trie,
            store,
            held: HashMap::new(),
        })
    }

    /// New patterns (config reload): the node table is replaced and every directory guarded
    /// again against it. Until the refresh that follows returns, directories guarded for the
    /// old patterns are judged against the new table.
    pub fn set_patterns(&mut self, patterns: &[String]) -> anyhow::Result<()> {
        let trie = NameTrie::build(patterns).map_err(anyhow::Error::msg)?;
        self.store
            .set_nodes(&trie.kernel_nodes())
            .context("writing the protected names' node table into the kernel")?;
        self.trie = trie;
        self.refresh().map(|_| ())
    }

    /// Guards every directory on a pattern's way now, and drops the guards of directories the
    /// agent guarded before that are no longer there. Returns how many are guarded.
    pub fn refresh(&mut self) -> anyhow::Result<usize> {
        let found = self.walk()?;
        for guarded in found.values() {
            self.store
                .guard(guarded.pin.as_fd(), guarded.children)
                .with_context(|| format!("guarding {} in the kernel", guarded.path.display()))?;
        }
        for (id, old) in &self.held {
            if !found.contains_key(id) {
                self.store
                    .unguard(old.pin.as_fd())
                    .with_context(|| format!("removing the guard of {}", old.path.display()))?;
            }
        }
        self.held = found;
        Ok(self.held.len())
    }

    /// Every existing directory on a pattern's way, by inode, with the union of the nodes it
    /// guards.
    fn walk(&self) -> anyhow::Result<HashMap<InodeId, Guarded>> {
        let mut found: HashMap<InodeId, Guarded> = HashMap::new();
        let mut pending = vec![(PathBuf::from("/"), self.trie.root_children())];
        while let Some((dir, candidates)) = pending.pop() {
            if candidates == 0 {
                continue;
            }
            let Some(pin) = open_path(&dir, true)? else {
                continue;
            };
            let meta = pin
                .metadata()
                .with_context(|| format!("stat {}", dir.display()))?;
            if !meta.is_dir() {
                continue;
            }
            for (name, children) in self.entries_on_the_way(&dir, candidates)? {
                pending.push((dir.join(OsStr::from_bytes(&name)), children));
            }
            found
                .entry((meta.dev(), meta.ino()))
                .and_modify(|guarded| guarded.children |= candidates)
                .or_insert(Guarded {
                    path: dir,
                    children: candidates,
                    pin,
                });
        }
        Ok(found)
    }

    /// The entries of `dir` that match a node of `candidates` with nodes below it, and those
    /// nodes. Only literal candidates: looked up by name, without reading the directory.
    fn entries_on_the_way(
        &self,
        dir: &Path,
        candidates: u64,
    ) -> anyhow::Result<Vec<(Vec<u8>, u64)>> {
        let literals: Option<Vec<Vec<u8>>> = ids(candidates)
            .map(|id| match &self.trie.node(id).component {
                Component::Literal(name) => Some(name.clone()),
                Component::Wildcard { .. } => None,
            })
            .collect();
        let names = match literals {
            Some(names) => names,
            None => match std::fs::read_dir(dir) {
                Ok(entries) => entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.file_name().as_bytes().to_vec())
                    .collect(),
                Err(err) if err.kind() == io::ErrorKind::NotFound => Vec::new(),
                Err(err) => {
                    return Err(err).with_context(|| format!("listing {}", dir.display()));
                }
            },
        };
        Ok(names
            .into_iter()
            .filter_map(|name| {
                let found = self.trie.match_name(candidates, &name);
                (found.children != 0).then_some((name, found.children))
            })
            .collect())
    }

    /// The guarded directories and what each guards (tests and logs).
    pub fn guarded(&self) -> Vec<(PathBuf, u64)> {
        self.held
            .values()
            .map(|guarded| (guarded.path.clone(), guarded.children))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Recorder {
        nodes: Arc<Mutex<Vec<NameNode>>>,
        guards: Arc<Mutex<HashMap<InodeId, u64>>>,
    }

    fn id_of_fd(fd: BorrowedFd<'_>) -> io::Result<InodeId> {
        let meta = nix::sys::stat::fstat(fd)?;
        Ok((meta.st_dev, meta.st_ino))
    }

    impl GuardStore for Recorder {
        fn set_nodes(&mut self, nodes: &[NameNode]) -> io::Result<()> {
            *self.nodes.lock().unwrap() = nodes.to_vec();
            Ok(())
        }

        fn guard(&mut self, dir: BorrowedFd<'_>, children: u64) -> io::Result<()> {
            self.guards.lock().unwrap().insert(id_of_fd(dir)?, children);
            Ok(())
        }

        fn unguard(&mut self, dir: BorrowedFd<'_>) -> io::Result<()> {
            self.guards.lock().unwrap().remove(&id_of_fd(dir)?);
            Ok(())
        }
    }

    impl Recorder {
        fn guard_of(&self, path: &Path) -> Option<u64> {
            let meta = std::fs::metadata(path).unwrap();
            self.guards
                .lock()
                .unwrap()
                .get(&(meta.dev(), meta.ino()))
                .copied()
        }
    }

    #[test]
    fn guards_every_existing_directory_on_the_way_and_only_those() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("home/alice/.ssh")).unwrap();
        std::fs::create_dir_all(root.join("home/bob")).unwrap();
        std::fs::create_dir_all(root.join("other")).unwrap();
        std::fs::write(root.join("home/carol"), "a file, not a directory").unwrap();
        let patterns = vec![format!("{}/home/*/.ssh/id_*", root.display())];
        let recorder = Recorder::default();
        let mut guards = GuardedDirs::new(&patterns, Box::new(recorder.clone())).unwrap();
        assert!(!recorder.nodes.lock().unwrap().is_empty());
        guards.refresh().unwrap();

        for guarded in ["/", "home", "home/alice", "home/bob", "home/alice/.ssh"] {
            let path = root.join(guarded);
            assert!(
                recorder.guard_of(&path).is_some_and(|bits| bits != 0),
                "{guarded}"
            );
        }
        for unguarded in ["other", "home/carol"] {
            assert_eq!(
                recorder.guard_of(&root.join(unguarded)),
                None,
                "{unguarded}"
            );
        }
        // The `*` node guards `.ssh` in every home, and only there.
        assert_eq!(
            recorder.guard_of(&root.join("home/alice")),
            recorder.guard_of(&root.join("home/bob"))
        );

        // A directory that leaves the way loses its guard at the next refresh.
        std::fs::rename(root.join("home/bob"), root.join("other/bob")).unwrap();
        std::fs::rename(root.join("other"), root.join("away")).unwrap();
        guards.refresh().unwrap();
        assert_eq!(recorder.guard_of(&root.join("away/bob")), None);
        assert!(recorder.guard_of(&root.join("home/alice")).is_some());
    }

    #[test]
    fn a_directory_two_patterns_reach_guards_both() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("srv/a")).unwrap();
        let patterns = vec![
            format!("{}/srv/*/key", root.display()),
            format!("{}/srv/a/cert", root.display()),
        ];
        let recorder = Recorder::default();
        let mut guards = GuardedDirs::new(&patterns, Box::new(recorder.clone())).unwrap();
        guards.refresh().unwrap();
        let trie = NameTrie::build(&patterns).unwrap();
        let bits = recorder.guard_of(&root.join("srv/a")).unwrap();
        let found = trie.match_name(bits, b"key");
        assert!(found.protect);
        assert!(trie.match_name(bits, b"cert").protect);
        assert!(!trie.match_name(bits, b"other").protect);
    }
}
