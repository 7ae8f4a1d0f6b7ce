//! Ending domains: reads the kernel's announcements that a domain's last task has exited
//! (DOMAIN_EVENTS), and scans for ends it could not announce, then ends the domain in the
//! registry (which tells the rest of the daemon) and writes the audit record.
//!
//! Announcements written while no agent ran wait in the pinned ring and are read first, with
//! the time the last task exited. The scan then ends every recorded domain whose count is gone,
//! so an end is never lost, only noticed later: within [`SCAN_EVERY`] while the agent runs.

use std::{sync::Arc, time::Duration};

use aya::maps::{MapData, RingBuf};
use bulkhead_common::lifecycle::DomainEnded;
use tokio::io::unix::AsyncFd;

use crate::{
    audit::{self, AuditLog, record},
    domains::{Domains, EndOutcome, EndedDomain, Noticed},
};

/// How often recorded domains are checked against the kernel's counts.
pub const SCAN_EVERY: Duration = Duration::from_secs(2);

pub struct DomainEnds {
    pub events: RingBuf<MapData>,
    pub log: Arc<AuditLog>,
}

impl DomainEnds {
    /// Runs until the agent stops.
    pub async fn run(self, domains: Arc<Domains>) {
        let Self { events, log } = self;
        let report = |ended: &EndedDomain| {
            tracing::info!(
                domain = ended.record.id,
                label = ended.record.label.as_ref().map_or("-", |l| l.as_str()),
                noticed = ?ended.noticed,
                "domain ended: its last task has exited"
            );
            log.append(&record::domain_ended(ended, audit::rfc3339(ended.ended)));
        };
        // SAFETY: the ring buffer owns its fd and keeps it open until dropped with the AsyncFd.
        let mut ring = match unsafe { AsyncFd::register(events) } {
            Ok(ring) => ring,
            Err(err) => {
                tracing::error!(error = %std::io::Error::from(err), "cannot watch the domain-end ring; ends are noticed by scanning only");
                scan_forever(&domains, report).await;
                return;
            }
        };
        // Whatever waited in the ring first, for its exact times; then the scan.
        drain(ring.get_mut(), &domains, report);
        scan(&domains, report);
        let mut every = tokio::time::interval(SCAN_EVERY);
        loop {
            tokio::select! {
                ready = ring.readable_mut() => {
                    let Ok(mut guard) = ready else { return };
                    drain(guard.get_inner_mut(), &domains, report);
                    guard.clear_ready();
                }
                _ = every.tick() => {
                    // The ring first: when the tick and an announcement are ready together,
                    // select! may pick the tick, and the scan would take an announced end for
                    // one it found itself (and lose its exact time).
                    drain(ring.get_mut(), &domains, report);
                    scan(&domains, report);
                }
            }
        }
    }
}

async fn scan_forever(domains: &Domains, report: impl Fn(&EndedDomain)) {
    let mut every = tokio::time::interval(SCAN_EVERY);
    loop {
        every.tick().await;
        scan(domains, &report);
    }
}

/// Ends (and reports) every recorded domain whose count the kernel no longer holds.
fn scan(domains: &Domains, report: impl Fn(&EndedDomain)) {
    for ended in domains.reconcile() {
        report(&ended);
    }
}

fn drain(ring: &mut RingBuf<MapData>, domains: &Domains, report: impl Fn(&EndedDomain)) {
    while let Some(item) = ring.next() {
        let Some(event) = decode(&item) else {
            tracing::error!(
                len = item.len(),
                "domain-end record of unexpected size; agent and programs disagree"
            );
            continue;
        };
        match domains.end(
            event.domain,
            audit::wall_time(event.boot_ns),
            Noticed::Event,
        ) {
            EndOutcome::Ended(ended) => report(&ended),
            EndOutcome::AlreadyEnded => {}
            EndOutcome::Unknown => tracing::info!(
                domain = event.domain,
                "a domain this agent has no record of ended (sealed before this state \
                 directory existed, or its seal failed part-way)"
            ),
        }
    }
}

fn decode(bytes: &[u8]) -> Option<DomainEnded> {
    (bytes.len() == std::mem::size_of::<DomainEnded>()).then(|| {
        // SAFETY: the length matches and DomainEnded is plain old data; the ring gives no
        // alignment guarantee, hence the unaligned read.
        unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<DomainEnded>()) }
    })
}
