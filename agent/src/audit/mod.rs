//! The audit trail: the programs write one record per refusal into a pinned ring buffer; this
//! task reads them, rate-limits per domain, and appends one JSON object per line to the audit
//! log. Records written while no agent ran are read at the next start; records the kernel could
//! not even buffer are counted (AUDIT_LOST) and reported as such.

pub mod limiter;
pub mod record;

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use aya::maps::{MapData, PerCpuArray, RingBuf};
use bulkhead_common::audit::AuditEvent;
use serde_json::json;
use tokio::{io::unix::AsyncFd, sync::watch};

use crate::{api::handlers::AppState, domains::Domains};
use limiter::{Limiter, Rate};

/// (major, minor, inode) of a protected inode, as both the kernel and `stat` can express it.
pub type InodeKey = (u64, u64, u64);
/// Paths of the protected inodes, kept up to date by the protected-file scans.
pub type KnownPaths = Arc<Mutex<HashMap<InodeKey, PathBuf>>>;

pub struct AuditTrail {
    pub events: RingBuf<MapData>,
    pub lost: PerCpuArray<MapData, u64>,
    pub log: Arc<AuditLog>,
    pub rate: watch::Receiver<Rate>,
    pub paths: KnownPaths,
}

/// The audit log file, shared by everything that writes records (refusals, domain ends).
pub struct AuditLog {
    file: Mutex<File>,
    path: PathBuf,
}

impl AuditLog {
    /// Opens (creating 0600, with 0700 directories) the audit log for appending.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent()
            && !dir.exists()
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("opening the audit log {}", path.display()))?;
        Ok(Self {
            file: Mutex::new(file),
            path: path.to_owned(),
        })
    }

    /// Appends one record as one line. A failed write is logged, never fatal: enforcement does
    /// not depend on the log.
    pub fn append(&self, record: &serde_json::Value) {
        let mut line = record.to_string();
        line.push('\n');
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // One write() per record, so lines from different writers never interleave.
        if let Err(err) = file.write_all(line.as_bytes()) {
            tracing::error!(error = %err, path = %self.path.display(), "audit log write failed");
        }
    }
}

pub(crate) fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_nanos(time).to_string()
}

/// Wall-clock time of a CLOCK_BOOTTIME instant.
pub(crate) fn wall_time(boot_ns: u64) -> SystemTime {
    let now_wall = SystemTime::now();
    let now_boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|ts| Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32))
        .unwrap_or_default();
    let age = now_boot.saturating_sub(Duration::from_nanos(boot_ns));
    now_wall - age
}

impl AuditTrail {
    /// Runs until the agent stops.
    pub async fn run(self, state: Arc<AppState>) {
        let domains = &state.domains;
        let Self {
            events,
            mut lost,
            log,
            mut rate,
            paths,
        } = self;
        let mut limiter = Limiter::new(*rate.borrow());
        // SAFETY: the ring buffer owns its fd and keeps it open until dropped with the AsyncFd.
        let mut ring = match unsafe { AsyncFd::register(events) } {
            Ok(ring) => ring,
            Err(err) => {
                tracing::error!(error = %std::io::Error::from(err), "cannot watch the audit ring buffer; no audit records will be written");
                return;
            }
        };
        let mut write = |line: serde_json::Value| log.append(&line);
        // Records kept in the ring or lost while no agent was reading come first.
        report_lost(
            &mut lost,
            &mut write,
            "while no agent was reading, or the ring was full",
        );
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                ready = ring.readable_mut() => {
                    let Ok(mut guard) = ready else { return };
                    let ring = guard.get_inner_mut();
                    while let Some(item) = ring.next() {
                        let Some(event) = decode(&item) else {
                            tracing::error!(len = item.len(), "audit record of unexpected size; agent and programs disagree");
                            continue;
                        };
                        if !limiter.admit(event.actor_domain, Duration::from_nanos(event.boot_ns)) {
                            continue;
                        }
                        write(describe(&event, domains, &paths));
                    }
                    guard.clear_ready();
                }
                _ = tick.tick() => {
                    for (domain, dropped) in limiter.take_dropped() {
                        write(json!({
                            "time": rfc3339(SystemTime::now()),
                            "type": "rate_limited",
                            "domain": domain,
                            "label": domains.label(domain).map(|l| l.as_str().to_owned()),
                            "dropped": dropped,
                        }));
                    }
                    report_lost(&mut lost, &mut write, "the ring was full");
                }
                changed = rate.changed() => {
                    if changed.is_ok() {
                        limiter.set_rate(*rate.borrow_and_update());
                    }
                }
            }
        }
    }
}

fn decode(bytes: &[u8]) -> Option<AuditEvent> {
    (bytes.len() == std::mem::size_of::<AuditEvent>()).then(|| {
        // SAFETY: the length matches and AuditEvent is plain old data; the ring gives no
        // alignment guarantee, hence the unaligned read.
        unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<AuditEvent>()) }
    })
}

fn describe(event: &AuditEvent, domains: &Domains, paths: &KnownPaths) -> serde_json::Value {
    let label = |id: u64| {
        (id != 0)
            .then(|| domains.label(id))
            .flatten()
            .map(|label| label.as_str().to_owned())
    };
    let actor_label = label(event.actor_domain);
    let target_label = label(event.target_domain);
    let path = (event.target_kind == bulkhead_common::audit::TARGET_INODE)
        .then(|| {
            let key = (event.dev >> 20, event.dev & 0xf_ffff, event.inode);
            paths.lock().ok()?.get(&key).cloned()
        })
        .flatten();
    record::to_json(
        event,
        &record::Context {
            time: rfc3339(wall_time(event.boot_ns)),
            actor_label: actor_label.as_deref(),
            target_label: target_label.as_deref(),
            path,
        },
    )
}

/// Reports and resets the kernel's count of records that did not fit in the ring.
fn report_lost(
    lost: &mut PerCpuArray<MapData, u64>,
    write: &mut impl FnMut(serde_json::Value),
    why: &str,
) {
    let Ok(values) = lost.get(&0, 0) else { return };
    let total: u64 = values.iter().sum();
    if total == 0 {
        return;
    }
    write(json!({
        "time": rfc3339(SystemTime::now()),
        "type": "lost",
        "count": total,
        "why": why,
    }));
    let zeros = match aya::maps::PerCpuValues::try_from(vec![0u64; values.len()]) {
        Ok(zeros) => zeros,
        Err(_) => return,
    };
    if let Err(err) = lost.set(0, zeros, 0) {
        tracing::warn!(error = %err, "could not reset the lost-record counter; counts may repeat");
    }
}
