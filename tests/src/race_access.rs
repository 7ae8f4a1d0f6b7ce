//! The task side of the race tests: read a protected name in a tight loop while an
//! administrator replaces it, or read hard links made to files an administrator then moves
//! into a protected directory. Each prints its counts on one line for the suite.

use std::{fs, io::ErrorKind, path::Path};

/// What came of the attempts.
#[derive(Default)]
struct Counts {
    reads: u64,
    refused: u64,
    errors: u64,
    generations: std::collections::BTreeSet<String>,
}

impl Counts {
    fn read(&mut self, path: &Path) {
        match fs::read_to_string(path) {
            Ok(content) => {
                self.reads += 1;
                self.generations.insert(content);
            }
            Err(err) if err.raw_os_error() == Some(libc::EPERM) => self.refused += 1,
            Err(_) => self.errors += 1,
        }
    }

    fn line(&self) -> String {
        format!(
            "reads={} refused={} errors={} generations={}",
            self.reads,
            self.refused,
            self.errors,
            self.generations.len()
        )
    }
}

/// Reads `path` until `stop` exists.
pub fn read_loop(path: &str, stop: &str) -> i32 {
    let mut counts = Counts::default();
    while !Path::new(stop).exists() {
        counts.read(Path::new(path));
    }
    println!("{}", counts.line());
    0
}

/// Until `stop` exists, hard-links every `F-<n>` that appears in `staging` to `links/L-<n>`
/// (a name of the task's own, outside the protected directory the files are moved into);
/// then reads every link it made.
pub fn link_then_read(staging: &str, links: &str, stop: &str) -> i32 {
    if let Err(err) = fs::create_dir_all(links) {
        eprintln!("{links}: {err}");
        return 20;
    }
    let mut linked = Vec::new();
    while !Path::new(stop).exists() {
        let Ok(entries) = fs::read_dir(staging) else {
            continue;
        };
        for entry in entries.flatten() {
            let link = Path::new(links).join(entry.file_name());
            match fs::hard_link(entry.path(), &link) {
                Ok(()) => linked.push(link),
                Err(err) if err.kind() == ErrorKind::AlreadyExists => {}
                // Moved away between the listing and the link.
                Err(err) if err.kind() == ErrorKind::NotFound => {}
                Err(err) => {
                    eprintln!("link {}: {err}", entry.path().display());
                    return 20;
                }
            }
        }
    }
    let mut counts = Counts::default();
    for link in &linked {
        counts.read(link);
    }
    println!("linked={} {}", linked.len(), counts.line());
    0
}

/// Until `stop` exists, lists `dir` and reads every entry whose name ends with `suffix` (new
/// files matching a protected glob, made by an administrator meanwhile).
pub fn read_matching_loop(dir: &str, suffix: &str, stop: &str) -> i32 {
    let mut counts = Counts::default();
    while !Path::new(stop).exists() {
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().ends_with(suffix) {
                counts.read(&entry.path());
            }
        }
    }
    println!("{}", counts.line());
    0
}

/// Until `stop` exists, reads `<base>/<every subdirectory>/<leaf>` (a protected path whose
/// directories an administrator makes meanwhile; `base` itself may not exist yet).
pub fn read_nested_loop(base: &str, leaf: &str, stop: &str) -> i32 {
    let mut counts = Counts::default();
    while !Path::new(stop).exists() {
        let Ok(entries) = fs::read_dir(base) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path().join(leaf);
            if path.exists() {
                counts.read(&path);
            }
        }
    }
    println!("{}", counts.line());
    0
}
