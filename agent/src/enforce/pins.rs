//! The agent's objects in bpffs, so enforcement outlives the agent process.
//!
//! ```text
//! <pin_dir>/maps/TASK_DOMAIN       domains of live tasks (adopted by the next agent)
//! <pin_dir>/maps/PROTECTED_INODE   protected-inode marks
//! <pin_dir>/maps/FILE_OWNER        which domain set each file owner
//! <pin_dir>/maps/FILE_OWNER_COUNT  how many FILE_OWNER records there are (at most)
//! <pin_dir>/maps/IPC_OWNER         which domain created each System V IPC object
//! <pin_dir>/maps/AUDIT_EVENTS      audit ring buffer; AUDIT_LOST its overflow count
//! <pin_dir>/maps/SETTINGS          enforce or audit mode
//! <pin_dir>/maps/DOMAIN_TASKS      running tasks per live domain
//! <pin_dir>/maps/COUNTED_TASKS     which domain each task created inside one is counted in
//! <pin_dir>/maps/DOMAIN_EVENTS     ring buffer announcing domains whose last task exited
//! <pin_dir>/links/<generation>/<hook>   one attached program per hook or tracepoint
//! ```
//!
//! A link stays attached while its pin exists, whoever holds file descriptors. An agent that
//! starts loads its programs against the pinned maps (so every label and mark survives),
//! attaches and pins a new generation of links, and only then removes the older generations:
//! there is never a moment with no program on a hook, across a restart or an upgrade.

use std::{
    fs,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// `statfs` magic of the BPF filesystem.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The maps shared between agent generations (aya-log's ring is per agent and is not pinned).
/// The audit ring is: events written while no agent runs wait for the next one.
pub const PINNED_MAPS: [&str; 16] = [
    bulkhead_common::TASK_DOMAIN_MAP,
    bulkhead_common::SHM_DOMAIN_MAP,
    bulkhead_common::KEY_OWNER_MAP,
    bulkhead_common::PROC_INODE_DOMAIN_MAP,
    bulkhead_common::SOCKET_DOMAIN_MAP,
    bulkhead_common::REACHABLE_SOCKET_MAP,
    bulkhead_common::PROTECTED_INODE_MAP,
    bulkhead_common::FILE_OWNER_MAP,
    bulkhead_common::FILE_OWNER_COUNT_MAP,
    bulkhead_common::IPC_OWNER_MAP,
    bulkhead_common::audit::AUDIT_EVENTS_MAP,
    bulkhead_common::audit::AUDIT_LOST_MAP,
    bulkhead_common::audit::SETTINGS_MAP,
    bulkhead_common::lifecycle::DOMAIN_TASKS_MAP,
    bulkhead_common::lifecycle::COUNTED_TASKS_MAP,
    bulkhead_common::lifecycle::DOMAIN_EVENTS_MAP,
];

#[derive(Debug, Clone)]
pub struct PinDir {
    root: PathBuf,
}

impl PinDir {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.root.join("maps").join(name)
    }

    fn links(&self) -> PathBuf {
        self.root.join("links")
    }

    /// Creates the directories (0700) after checking the root's parent is on bpffs.
    pub fn prepare(&self) -> anyhow::Result<()> {
        let parent = self.root.parent().unwrap_or(Path::new("/"));
        let stat = nix::sys::statfs::statfs(parent)
            .with_context(|| format!("statfs {}", parent.display()))?;
        if stat.filesystem_type().0 as i64 != BPF_FS_MAGIC {
            bail!(
                "{} is not on a BPF filesystem (mount -t bpf bpf /sys/fs/bpf)",
                parent.display()
            );
        }
        for dir in [self.root.clone(), self.root.join("maps"), self.links()] {
            match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(err) => return Err(err).with_context(|| format!("creating {}", dir.display())),
            }
        }
        Ok(())
    }

    /// Are there maps from an earlier agent to adopt?
    pub fn has_pinned_maps(&self) -> bool {
        PINNED_MAPS.iter().any(|name| self.map(name).exists())
    }

    /// A new, empty generation directory for this agent's links.
    pub fn new_generation(&self) -> anyhow::Result<Generation> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let dir = self.links().join(format!("{stamp:032}"));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        Ok(Generation { dir })
    }

    /// Link generations present now, oldest first.
    pub fn generations(&self) -> anyhow::Result<Vec<Generation>> {
        let mut dirs: Vec<PathBuf> = match fs::read_dir(self.links()) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .collect(),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(err) => {
                return Err(err).with_context(|| format!("listing {}", self.links().display()));
            }
        };
        dirs.sort();
        Ok(dirs.into_iter().map(|dir| Generation { dir }).collect())
    }

    /// Removes every pin: detaches every program and lets the kernel free the maps once
    /// nothing else holds them. Returns (links removed, maps removed) only once every detached
    /// program is gone from the kernel: since Linux 6.x the kernel releases a link in a work
    /// item after its last reference goes, so "unpinned" is not yet "no longer enforcing".
    pub fn remove_all(&self) -> anyhow::Result<(usize, usize)> {
        let mut links = 0;
        let mut programs = Vec::new();
        for generation in self.generations()? {
            let unpinned = generation.unpin()?;
            links += unpinned.links;
            programs.extend(unpinned.programs);
        }
        let mut maps = 0;
        for name in PINNED_MAPS {
            match fs::remove_file(self.map(name)) {
                Ok(()) => maps += 1,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    return Err(err)
                        .with_context(|| format!("removing {}", self.map(name).display()));
                }
            }
        }
        for dir in [self.root.join("maps"), self.links(), self.root.clone()] {
            match fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(err).with_context(|| format!("removing {}", dir.display())),
            }
        }
        wait_until_unloaded(&programs, DETACH_TIMEOUT)?;
        Ok((links, maps))
    }
}

/// How long `bulkhead uninstall` waits for the kernel to release the detached programs.
const DETACH_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits until no program with one of these ids is loaded. A program is freed only after its
/// link has been detached from the hook (the link holds the last reference), so once the ids
/// are gone nothing of bulkhead runs in any hook.
fn wait_until_unloaded(programs: &[u32], timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let loaded: Vec<u32> = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .map(|info| info.id())
            .filter(|id| programs.contains(id))
            .collect();
        if loaded.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "{} detached program(s) (ids {loaded:?}) still loaded after {} s; the kernel has \
                 not released them yet, check `bpftool prog show`",
                loaded.len(),
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What unpinning a generation released.
pub struct Unpinned {
    pub links: usize,
    /// Ids of the programs the links held.
    pub programs: Vec<u32>,
}

/// One agent's set of pinned links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    dir: PathBuf,
}

impl Generation {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn link(&self, hook: &str) -> PathBuf {
        self.dir.join(hook)
    }

    /// Unpins every link of this generation (detaching the programs) and removes the directory.
    /// Returns how many links were removed.
    pub fn remove(&self) -> anyhow::Result<usize> {
        Ok(self.unpin()?.links)
    }

    /// As `remove`, also saying which programs the links held (the kernel frees them once
    /// detached).
    pub fn unpin(&self) -> anyhow::Result<Unpinned> {
        let mut unpinned = Unpinned {
            links: 0,
            programs: Vec::new(),
        };
        for entry in
            fs::read_dir(&self.dir).with_context(|| format!("listing {}", self.dir.display()))?
        {
            let path = entry?.path();
            // Opened first to learn its program, so the caller can wait for it to be released;
            // an entry that is not a link at all is just removed.
            match aya::programs::links::PinnedLink::from_pin(&path) {
                Ok(link) => {
                    let link = link
                        .unpin()
                        .with_context(|| format!("unpinning {}", path.display()))?;
                    let info = link
                        .info()
                        .with_context(|| format!("reading the link {}", path.display()))?;
                    unpinned.programs.push(info.program_id());
                }
                Err(_) => match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => {
                        return Err(err).with_context(|| format!("unpinning {}", path.display()));
                    }
                },
            }
            unpinned.links += 1;
        }
        fs::remove_dir(&self.dir).with_context(|| format!("removing {}", self.dir.display()))?;
        Ok(unpinned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The directory logic on an ordinary filesystem (pins are just files to it).
    fn layout() -> (tempfile::TempDir, PinDir) {
        let dir = tempfile::tempdir().unwrap();
        let pins = PinDir::new(&dir.path().join("bulkhead"));
        for sub in ["", "maps", "links"] {
            fs::create_dir_all(pins.root().join(sub)).unwrap();
        }
        (dir, pins)
    }

    #[test]
    fn generations_are_listed_oldest_first_and_removed_with_their_links() {
        let (_dir, pins) = layout();
        let first = pins.new_generation().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = pins.new_generation().unwrap();
        for hook in ["task_alloc", "bpf"] {
            fs::write(first.link(hook), "").unwrap();
            fs::write(second.link(hook), "").unwrap();
        }
        assert_eq!(pins.generations().unwrap(), [first.clone(), second.clone()]);
        assert_eq!(first.remove().unwrap(), 2);
        assert_eq!(pins.generations().unwrap(), [second]);
    }

    #[test]
    fn remove_all_leaves_nothing_and_counts() {
        let (_dir, pins) = layout();
        assert!(!pins.has_pinned_maps());
        let generation = pins.new_generation().unwrap();
        fs::write(generation.link("task_alloc"), "").unwrap();
        for name in PINNED_MAPS {
            fs::write(pins.map(name), "").unwrap();
        }
        assert!(pins.has_pinned_maps());
        assert_eq!(pins.remove_all().unwrap(), (1, PINNED_MAPS.len()));
        assert!(!pins.root().exists());
        // Idempotent: a second uninstall finds nothing and succeeds.
        assert_eq!(pins.remove_all().unwrap(), (0, 0));
    }

    #[test]
    fn prepare_refuses_a_directory_not_on_bpffs() {
        let dir = tempfile::tempdir().unwrap();
        let err = PinDir::new(&dir.path().join("bulkhead"))
            .prepare()
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("not on a BPF filesystem"),
            "{err:#}"
        );
    }
}
