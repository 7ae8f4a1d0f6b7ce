//! Per-domain rate limiting of audit records: a token bucket per domain, so one noisy task
//! cannot flood the log or hide another domain's events, with a count of what was dropped.
//!
//! The bucket is metered by when each event happened (the kernel's CLOCK_BOOTTIME stamp), not
//! by when the agent read it. A backlog read at once (the ring kept while no agent ran, or a
//! reader that fell behind) is then sampled across the whole time it covers: the records of a
//! gap in the agent's life are not all spent on its first moments. The stamp is the kernel's,
//! so a task cannot choose it.

use std::{collections::HashMap, time::Duration};

use bulkhead_common::DomainId;

/// Domains tracked at once; beyond this the quietest are forgotten (their next event starts a
/// fresh bucket), keeping memory bounded whatever the number of domains.
const MAX_TRACKED_DOMAINS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_sec: f64,
    pub burst: f64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    /// Event time (since boot) the tokens were last counted at.
    updated: Duration,
    dropped: u64,
}

#[derive(Debug)]
pub struct Limiter {
    rate: Rate,
    buckets: HashMap<DomainId, Bucket>,
}

impl Limiter {
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: HashMap::new(),
        }
    }

    pub fn set_rate(&mut self, rate: Rate) {
        self.rate = rate;
    }

    /// May an event of `domain` that happened at `now` (since boot) be written? If not, it is
    /// counted as dropped.
    pub fn admit(&mut self, domain: DomainId, now: Duration) -> bool {
        if !self.buckets.contains_key(&domain) && self.buckets.len() >= MAX_TRACKED_DOMAINS {
            self.forget_idle(now);
        }
        let rate = self.rate;
        let bucket = self.buckets.entry(domain).or_insert(Bucket {
            tokens: rate.burst,
            updated: now,
            dropped: 0,
        });
        let elapsed = now.saturating_sub(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate.per_sec).min(rate.burst);
        // Events of different CPUs reach the ring slightly out of order; an earlier stamp must
        // not wind the clock back, or the same interval would refill twice.
        bucket.updated = bucket.updated.max(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            bucket.dropped += 1;
            false
        }
    }

    /// Domains with dropped events since the last call, and how many; resets the counts.
    pub fn take_dropped(&mut self) -> Vec<(DomainId, u64)> {
        let mut dropped: Vec<_> = self
            .buckets
            .iter_mut()
            .filter(|(_, bucket)| bucket.dropped > 0)
            .map(|(domain, bucket)| (*domain, std::mem::take(&mut bucket.dropped)))
            .collect();
        dropped.sort_unstable();
        dropped
    }

    /// Drops the buckets that are full again and have nothing to report.
    fn forget_idle(&mut self, now: Duration) {
        let rate = self.rate;
        self.buckets.retain(|_, bucket| {
            let elapsed = now.saturating_sub(bucket.updated).as_secs_f64();
            bucket.dropped > 0 || bucket.tokens + elapsed * rate.per_sec < rate.burst
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        per_sec: 10.0,
        burst: 5.0,
    };

    #[test]
    fn a_burst_passes_then_the_rest_is_counted() {
        let mut limiter = Limiter::new(RATE);
        let now = Duration::from_secs(100);
        let admitted = (0..100).filter(|_| limiter.admit(7, now)).count();
        assert_eq!(admitted, 5);
        assert_eq!(limiter.take_dropped(), [(7, 95)]);
        assert_eq!(limiter.take_dropped(), [], "counts reset once reported");
    }

    #[test]
    fn tokens_refill_at_the_rate() {
        let mut limiter = Limiter::new(RATE);
        let start = Duration::from_secs(100);
        for _ in 0..5 {
            assert!(limiter.admit(1, start));
        }
        assert!(!limiter.admit(1, start));
        // 10 per second: 300 ms later, three more.
        let later = start + Duration::from_millis(300);
        let admitted = (0..10).filter(|_| limiter.admit(1, later)).count();
        assert_eq!(admitted, 3);
    }

    #[test]
    fn one_noisy_domain_does_not_silence_another() {
        let mut limiter = Limiter::new(RATE);
        let now = Duration::from_secs(100);
        for _ in 0..1000 {
            limiter.admit(1, now);
        }
        assert!(limiter.admit(2, now));
        assert_eq!(limiter.take_dropped(), [(1, 995)]);
    }

    #[test]
    fn memory_stays_bounded_with_many_domains() {
        let mut limiter = Limiter::new(RATE);
        let start = Duration::from_secs(100);
        for domain in 0..(3 * MAX_TRACKED_DOMAINS as u64) {
            // Each domain is idle long enough to have refilled before the next arrives.
            let now = start + Duration::from_secs(domain);
            limiter.admit(domain, now);
        }
        assert!(limiter.buckets.len() <= MAX_TRACKED_DOMAINS);
    }

    #[test]
    fn a_backlog_is_metered_by_when_its_events_happened() {
        let mut limiter = Limiter::new(RATE);
        let start = Duration::from_secs(100);
        // Ten seconds of a flood, 100 events a second, all read in one go afterwards: the
        // burst, then the rate across the ten seconds, so the last second is represented too.
        let admitted: Vec<_> = (0..1000u64)
            .map(|i| start + Duration::from_millis(10 * i))
            .filter(|at| limiter.admit(1, *at))
            .collect();
        assert_eq!(admitted.len(), 5 + 99);
        assert!(*admitted.last().unwrap() >= start + Duration::from_secs(9));
    }

    #[test]
    fn an_out_of_order_stamp_does_not_refill_twice() {
        let mut limiter = Limiter::new(RATE);
        let start = Duration::from_secs(100);
        for _ in 0..5 {
            assert!(limiter.admit(1, start));
        }
        let later = start + Duration::from_millis(100);
        assert!(limiter.admit(1, later), "one token after 100 ms");
        assert!(!limiter.admit(1, start), "an earlier stamp adds nothing");
        assert!(
            !limiter.admit(1, later),
            "and the interval is not counted again"
        );
    }
}
