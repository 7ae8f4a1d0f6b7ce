//! One pass over the protected paths: expand globs, open each match without reading it, and
//! mark its inode (and, for a directory, every inode below it).
//!
//! The agent keeps each marked inode open (`O_PATH`) until a later pass no longer finds it.
//! A mark lives in the kernel's inode storage, which is freed when the inode leaves the inode
//! cache; on a disk filesystem that happens to any file nobody holds open, under memory
//! pressure a task can create. The inode read back from disk would carry no mark until the
//! next pass. An open descriptor holds the dentry and so the inode: the mark cannot be dropped.

use std::{
    collections::HashMap,
    fs::File,
    os::{
        fd::AsFd,
        unix::fs::{MetadataExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};

use super::{InodeMarker, guard::GuardedDirs};
use crate::audit::KnownPaths;

/// More inodes than this below the protected paths is almost certainly a misconfiguration
/// (protecting a whole tree of data rather than secrets); the scan stops with an error.
pub const MAX_PROTECTED_INODES: usize = 100_000;

/// A device and inode number: identifies a marked inode for change reporting only (the marks
/// themselves live on the inodes, in the kernel).
pub(super) type InodeId = (u64, u64);

/// A marked inode, where a pass found it, and the descriptor that keeps it (and its mark) in
/// the kernel's inode cache.
struct Pinned {
    path: PathBuf,
    pin: File,
}

pub struct Protector {
    patterns: Vec<String>,
    marker: Box<dyn InodeMarker>,
    /// Every inode marked by the last pass, with the path it was found at, held open.
    marked: HashMap<InodeId, Pinned>,
    known: KnownPaths,
    /// The directories on the patterns' way, guarded in the kernel (absent in tests that only
    /// look at marks).
    guards: Option<GuardedDirs>,
    /// The patterns changed since the guards last saw them.
    patterns_changed: bool,
}

#[derive(Debug, Default)]
pub struct ScanReport {
    /// Inodes marked in this pass.
    pub inodes: usize,
    /// Paths whose inode was not marked before this pass (first scan: all of them).
    pub newly_marked: Vec<PathBuf>,
    /// Patterns that matched nothing this time.
    pub unmatched: Vec<String>,
    /// Paths no pattern covers any more (after a reload) whose marks were removed.
    pub unprotected: Vec<PathBuf>,
    /// Directories on the patterns' way, guarded in the kernel.
    pub guarded_dirs: usize,
}

impl Protector {
    /// `patterns` are absolute paths or globs, already validated by the config parser.
    pub fn new(patterns: Vec<String>, marker: Box<dyn InodeMarker>) -> Self {
        Self {
            patterns,
            marker,
            marked: HashMap::new(),
            known: KnownPaths::default(),
            guards: None,
            patterns_changed: false,
        }
    }

    /// Keeps `guards` current with every scan and pattern change.
    pub fn with_guards(mut self, guards: GuardedDirs) -> Self {
        self.guards = Some(guards);
        self
    }

    /// Where the audit trail looks up the path of a protected inode.
    pub fn known_paths(&self) -> KnownPaths {
        self.known.clone()
    }

    /// New patterns (config reload); they apply at the next scan.
    pub fn set_patterns(&mut self, patterns: Vec<String>) {
        self.patterns = patterns;
        self.patterns_changed = true;
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Marks every inode the patterns name now. An error means a mark could not be written
    /// (or the limit was hit): protection is then incomplete and the caller must say so.
    ///
    /// Every inode is marked again on every pass, even one seen before: an inode number can be
    /// reused by a new file after the old one is deleted, and re-marking is idempotent.
    pub fn scan(&mut self) -> anyhow::Result<ScanReport> {
        let previously = std::mem::take(&mut self.marked);
        let mut pass = Pass {
            marker: &mut *self.marker,
            previously: &previously,
            seen: HashMap::new(),
            report: ScanReport::default(),
        };
        for pattern in &self.patterns {
            let paths = glob::glob(pattern).with_context(|| format!("expanding {pattern}"))?;
            let mut matched = false;
            // Entries that cannot be read while expanding are skipped: the agent runs as root,
            // so this only happens on special filesystems.
            for path in paths.flatten() {
                matched |= pass.mark_tree(&path)?;
            }
            if !matched {
                pass.report.unmatched.push(pattern.clone());
            }
        }
        let Pass {
            seen, mut report, ..
        } = pass;
        // An inode still at the path it was marked at, but no longer named by any pattern,
        // was dropped from the config: unmark it. (A replaced or moved file is no longer at
        // its old path and keeps its mark; its pin is released with `previously`.)
        for (id, Pinned { path, pin }) in &previously {
            if !seen.contains_key(id) && still_at(path, *id)? {
                self.marker
                    .unmark(pin.as_fd())
                    .with_context(|| format!("unmarking {}", path.display()))?;
                report.unprotected.push(path.clone());
            }
        }
        report.inodes = seen.len();
        if let Ok(mut known) = self.known.lock() {
            *known = seen
                .iter()
                .map(|((dev, ino), Pinned { path, .. })| {
                    (
                        (
                            u64::from(libc::major(*dev)),
                            u64::from(libc::minor(*dev)),
                            *ino,
                        ),
                        path.clone(),
                    )
                })
                .collect();
        }
        self.marked = seen;
        // After the marks: a directory newly on the way then guards names whose inodes are
        // already marked.
        if let Some(guards) = &mut self.guards {
            if std::mem::take(&mut self.patterns_changed) {
                guards.set_patterns(&self.patterns)?;
            }
            report.guarded_dirs = guards.refresh()?;
        }
        Ok(report)
    }
}

/// Raises the agent's soft open-file limit to its hard limit: the protector keeps up to
/// [`MAX_PROTECTED_INODES`] descriptors open besides the agent's own. Returns the new limit.
pub fn raise_open_file_limit() -> anyhow::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit(RLIMIT_NOFILE)")?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("setrlimit(RLIMIT_NOFILE)")?;
    }
    Ok(hard)
}

/// Opens `path` with O_PATH (no read access needed, works on any file type); `None` if it
/// does not exist.
pub(super) fn open_path(path: &Path, follow: bool) -> anyhow::Result<Option<File>> {
    let mut flags = libc::O_PATH | libc::O_CLOEXEC;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
    {
        Ok(file) => Ok(Some(file)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) if err.raw_os_error() == Some(libc::EMFILE) => Err(err).with_context(|| {
            format!(
                "opening {} to keep its mark: the agent holds every protected inode open; \
                 raise its open-file limit (LimitNOFILE) above the number of protected inodes",
                path.display()
            )
        }),
        Err(err) => Err(err).with_context(|| format!("opening {}", path.display())),
    }
}

fn still_at(path: &Path, id: InodeId) -> anyhow::Result<bool> {
    Ok(std::fs::symlink_metadata(path)
        .map(|meta| (meta.dev(), meta.ino()) == id)
        .unwrap_or(false))
}

struct Pass<'a> {
    marker: &'a mut dyn InodeMarker,
    previously: &'a HashMap<InodeId, Pinned>,
    seen: HashMap<InodeId, Pinned>,
    report: ScanReport,
}

impl Pass<'_> {
    /// Marks `root` (following a symlink there, as any path walk would) and, if it is a
    /// directory, everything below it without following symlinks. Returns whether `root` existed.
    fn mark_tree(&mut self, root: &Path) -> anyhow::Result<bool> {
        let Some(is_dir) = self.mark_path(root, true)? else {
            return Ok(false);
        };
        if is_dir {
            for entry in walkdir::WalkDir::new(root).min_depth(1).follow_links(false) {
                let Ok(entry) = entry else { continue };
                self.mark_path(entry.path(), false)?;
            }
        }
        Ok(true)
    }

    /// Opens `path` with O_PATH (no read access needed, works on any file type) and marks the
    /// inode. `None` when the path vanished in the meantime; otherwise whether it is a directory.
    fn mark_path(&mut self, path: &Path, follow: bool) -> anyhow::Result<Option<bool>> {
        let Some(file) = open_path(path, follow)? else {
            return Ok(None);
        };
        let meta = File::metadata(&file).with_context(|| format!("stat {}", path.display()))?;
        let id = (meta.dev(), meta.ino());
        if self.seen.contains_key(&id) {
            return Ok(Some(meta.is_dir()));
        }
        if self.seen.len() >= MAX_PROTECTED_INODES {
            bail!(
                "more than {MAX_PROTECTED_INODES} inodes below the protected paths (at {}); \
                 protect the secrets, not whole data trees",
                path.display()
            );
        }
        self.marker
            .mark(file.as_fd())
            .with_context(|| format!("marking {} protected in the kernel", path.display()))?;
        if !self.previously.contains_key(&id) {
            self.report.newly_marked.push(path.to_owned());
        }
        self.seen.insert(
            id,
            Pinned {
                path: path.to_owned(),
                pin: file,
            },
        );
        Ok(Some(meta.is_dir()))
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io,
        os::fd::BorrowedFd,
        sync::{Arc, Mutex},
    };

    use super::*;

    /// Records the (device, inode) of every mark; optionally fails like a full kernel map.
    #[derive(Clone, Default)]
    struct Recorder {
        marks: Arc<Mutex<Vec<InodeId>>>,
        fail: bool,
    }

    impl InodeMarker for Recorder {
        fn mark(&mut self, inode: BorrowedFd<'_>) -> io::Result<()> {
            if self.fail {
                return Err(io::Error::from_raw_os_error(libc::ENOMEM));
            }
            let meta = nix::sys::stat::fstat(inode)?;
            self.marks.lock().unwrap().push((meta.st_dev, meta.st_ino));
            Ok(())
        }

        fn unmark(&mut self, inode: BorrowedFd<'_>) -> io::Result<()> {
            let meta = nix::sys::stat::fstat(inode)?;
            self.marks
                .lock()
                .unwrap()
                .retain(|id| *id != (meta.st_dev, meta.st_ino));
            Ok(())
        }
    }

    impl Recorder {
        fn marked(&self, path: &Path) -> bool {
            self.marks.lock().unwrap().contains(&id_of(path))
        }
    }

    fn protector(patterns: &[String]) -> (Protector, Recorder) {
        let recorder = Recorder::default();
        (
            Protector::new(patterns.to_vec(), Box::new(recorder.clone())),
            recorder,
        )
    }

    #[test]
    fn marks_files_globs_and_whole_directories() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("airflow.cfg"), "jwt_secret = x").unwrap();
        std::fs::write(root.join("public.txt"), "not secret").unwrap();
        std::fs::create_dir_all(root.join("keys/old")).unwrap();
        std::fs::write(root.join("keys/a.pem"), "k").unwrap();
        std::fs::write(root.join("keys/old/b.pem"), "k").unwrap();
        std::fs::write(root.join("c.pem"), "k").unwrap();
        let (mut protector, recorder) = protector(&[
            format!("{}/airflow.cfg", root.display()),
            format!("{}/keys", root.display()),
            format!("{}/*.pem", root.display()),
            format!("{}/absent.cfg", root.display()),
        ]);
        let report = protector.scan().unwrap();
        for path in [
            "airflow.cfg",
            "keys",
            "keys/a.pem",
            "keys/old",
            "keys/old/b.pem",
            "c.pem",
        ] {
            assert!(recorder.marked(&root.join(path)), "{path} not marked");
        }
        assert!(!recorder.marked(&root.join("public.txt")));
        assert!(
            !recorder.marked(root),
            "the parent directory must stay usable"
        );
        assert_eq!(report.inodes, 6);
        assert_eq!(report.newly_marked.len(), 6);
        assert_eq!(report.unmatched, [format!("{}/absent.cfg", root.display())]);
    }

    /// The inode numbers the agent holds open, read from its own descriptor table.
    fn held_open() -> Vec<InodeId> {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter_map(|fd| std::fs::metadata(fd.path()).ok())
            .map(|meta| (meta.dev(), meta.ino()))
            .collect()
    }

    fn id_of(path: &Path) -> InodeId {
        let meta = std::fs::symlink_metadata(path).unwrap();
        (meta.dev(), meta.ino())
    }

    #[test]
    fn every_marked_inode_is_held_open_until_a_pass_no_longer_finds_it() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("airflow.cfg");
        let keys = dir.path().join("keys");
        std::fs::write(&cfg, "v1").unwrap();
        std::fs::create_dir(&keys).unwrap();
        std::fs::write(keys.join("a.pem"), "k").unwrap();
        let (mut protector, _recorder) =
            protector(&[cfg.display().to_string(), keys.display().to_string()]);
        protector.scan().unwrap();
        let first = id_of(&cfg);
        for id in [first, id_of(&keys), id_of(&keys.join("a.pem"))] {
            assert!(held_open().contains(&id), "{id:?} not held open");
        }
        let tmp = dir.path().join("airflow.cfg.tmp");
        std::fs::write(&tmp, "v2").unwrap();
        std::fs::rename(&tmp, &cfg).unwrap();
        protector.scan().unwrap();
        let held = held_open();
        assert!(held.contains(&id_of(&cfg)), "the new inode is held");
        assert!(!held.contains(&first), "the replaced inode is released");
    }

    #[test]
    fn a_replaced_file_is_reported_and_marked_on_the_next_scan() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("airflow.cfg");
        std::fs::write(&cfg, "v1").unwrap();
        let (mut protector, recorder) = protector(&[cfg.display().to_string()]);
        protector.scan().unwrap();
        let again = protector.scan().unwrap();
        assert!(again.newly_marked.is_empty(), "{:?}", again.newly_marked);

        // What editors and config tools do: write a new file, rename it over the old one.
        let tmp = dir.path().join("airflow.cfg.tmp");
        std::fs::write(&tmp, "v2").unwrap();
        std::fs::rename(&tmp, &cfg).unwrap();
        assert!(
            !recorder.marked(&cfg),
            "new inode cannot be marked before a scan"
        );
        let report = protector.scan().unwrap();
        assert!(recorder.marked(&cfg));
        assert_eq!(report.newly_marked, [cfg]);
    }

    #[test]
    fn symlinks_are_followed_at_the_named_path_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("secrets")).unwrap();
        std::fs::write(root.join("target.cfg"), "x").unwrap();
        std::fs::write(root.join("elsewhere.txt"), "x").unwrap();
        std::os::unix::fs::symlink(root.join("target.cfg"), root.join("link.cfg")).unwrap();
        std::os::unix::fs::symlink(root.join("elsewhere.txt"), root.join("secrets/ln")).unwrap();
        let (mut protector, recorder) = protector(&[
            format!("{}/link.cfg", root.display()),
            format!("{}/secrets", root.display()),
        ]);
        protector.scan().unwrap();
        assert!(
            recorder.marked(&root.join("target.cfg")),
            "named symlink is followed"
        );
        assert!(
            recorder.marked(&root.join("secrets/ln")),
            "the link inode itself"
        );
        assert!(
            !recorder.marked(&root.join("elsewhere.txt")),
            "links inside a protected directory must not extend protection elsewhere"
        );
    }

    #[test]
    fn a_path_dropped_from_the_config_is_unmarked_and_known_paths_follow() {
        let dir = tempfile::tempdir().unwrap();
        let keep = dir.path().join("keep.cfg");
        let drop = dir.path().join("drop.cfg");
        std::fs::write(&keep, "x").unwrap();
        std::fs::write(&drop, "x").unwrap();
        let (mut protector, recorder) =
            protector(&[keep.display().to_string(), drop.display().to_string()]);
        protector.scan().unwrap();
        assert!(recorder.marked(&drop));
        assert_eq!(protector.known_paths().lock().unwrap().len(), 2);
        protector.set_patterns(vec![keep.display().to_string()]);
        let report = protector.scan().unwrap();
        assert_eq!(report.unprotected, std::slice::from_ref(&drop));
        assert!(!recorder.marked(&drop));
        assert!(recorder.marked(&keep));
        let known = protector.known_paths();
        let known = known.lock().unwrap();
        assert_eq!(known.values().collect::<Vec<_>>(), [&keep]);
    }

    #[test]
    fn a_mark_the_kernel_refuses_fails_the_scan_naming_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("airflow.cfg");
        std::fs::write(&cfg, "x").unwrap();
        let recorder = Recorder {
            fail: true,
            ..Recorder::default()
        };
        let mut protector = Protector::new(vec![cfg.display().to_string()], Box::new(recorder));
        let err = format!("{:#}", protector.scan().unwrap_err());
        assert!(
            err.contains("airflow.cfg") && err.contains("marking"),
            "{err}"
        );
    }
}
