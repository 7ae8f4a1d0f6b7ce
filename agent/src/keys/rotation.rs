//! Key rotation without downtime, decided from file names and the clock alone.
//!
//! Each key in the key directory is named after the second it was created
//! (`signing-<unix seconds>.key`). From those times and two durations every key's role follows:
//!
//! - a new key is published (JWKS, and accepted by introspection) at once, but signs only
//!   `publish_lead` after its creation, so every validator that caches the JWKS has seen it
//!   before the first token signed with it arrives;
//! - the newest key past its lead signs (the oldest key signs at once: on a new node nobody
//!   holds a JWKS yet);
//! - a key that stopped signing stays published until every token it signed has expired
//!   (`retire_after`: the longest token lifetime plus clock leeway plus how late the agent may
//!   notice the switch), then it is expired: no longer published or trusted.
//!
//! No state is kept anywhere else, so a restart, a crash or a second look at the directory
//! always reaches the same roles.

use serde::Serialize;

pub const KEY_FILE_PREFIX: &str = "signing-";
pub const KEY_FILE_SUFFIX: &str = ".key";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Published, not yet signing.
    Next,
    /// Signs new tokens; published.
    Signing,
    /// No longer signs; published until its last token has expired.
    Retired,
    /// Neither signs nor is trusted; `bulkhead keys rotate` deletes it.
    Expired,
}

impl Role {
    pub fn is_published(self) -> bool {
        self != Self::Expired
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub publish_lead: u64,
    pub retire_after: u64,
}

/// The file name of a key created at `created` (Unix seconds).
pub fn file_name(created: u64) -> String {
    format!("{KEY_FILE_PREFIX}{created}{KEY_FILE_SUFFIX}")
}

/// The creation time a key file name carries; `None` for any other name.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(KEY_FILE_PREFIX)?
        .strip_suffix(KEY_FILE_SUFFIX)?;
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The role of each key at `now`, for creation times sorted oldest first (duplicates are
/// impossible: they are one file name).
pub fn roles(created: &[u64], now: u64, schedule: Schedule) -> Vec<Role> {
    debug_assert!(created.windows(2).all(|pair| pair[0] < pair[1]));
    // When each key may start signing; the oldest may sign at once.
    let eligible = |index: usize| {
        if index == 0 {
            0
        } else {
            created[index].saturating_add(schedule.publish_lead)
        }
    };
    let Some(signer) = (0..created.len())
        .rev()
        .find(|&index| eligible(index) <= now)
    else {
        return Vec::new();
    };
    (0..created.len())
        .map(|index| {
            if index > signer {
                Role::Next
            } else if index == signer {
                Role::Signing
            } else if now < eligible(index + 1).saturating_add(schedule.retire_after) {
                // It signed until its successor became eligible; those tokens are still live.
                Role::Retired
            } else {
                Role::Expired
            }
        })
        .collect()
}

/// The schedule the key tests reason about: 300 s lead, 700 s kept after retirement.
#[cfg(test)]
pub(crate) const TEST_SCHEDULE: Schedule = Schedule {
    publish_lead: 300,
    retire_after: 700,
};

#[cfg(test)]
mod tests {
    use super::{TEST_SCHEDULE as SCHEDULE, *};

    #[test]
    fn file_names_round_trip_and_strangers_are_ignored() {
        assert_eq!(
            parse_file_name(&file_name(1_700_000_000)),
            Some(1_700_000_000)
        );
        for name in [
            "signing-.key",
            "signing-12.pem",
            "signing-1a.key",
            "signing--1.key",
            "other-12.key",
            "signing-12.key.tmp",
            "signing-999999999999999999999.key",
        ] {
            assert_eq!(parse_file_name(name), None, "{name}");
        }
    }

    #[test]
    fn a_single_key_signs_at_once() {
        assert_eq!(roles(&[1000], 1000, SCHEDULE), [Role::Signing]);
        assert_eq!(roles(&[], 1000, SCHEDULE), []);
    }

    #[test]
    fn a_new_key_is_published_for_the_lead_before_it_signs() {
        let keys = [1000, 5000];
        assert_eq!(roles(&keys, 5000, SCHEDULE), [Role::Signing, Role::Next]);
        assert_eq!(roles(&keys, 5299, SCHEDULE), [Role::Signing, Role::Next]);
        assert_eq!(roles(&keys, 5300, SCHEDULE), [Role::Retired, Role::Signing]);
    }

    #[test]
    fn a_retired_key_stays_published_until_its_last_token_expired() {
        let keys = [1000, 5000];
        // The old key signed until 5300; its last token lives until 5300 + 700.
        assert_eq!(roles(&keys, 5999, SCHEDULE), [Role::Retired, Role::Signing]);
        assert_eq!(roles(&keys, 6000, SCHEDULE), [Role::Expired, Role::Signing]);
    }

    #[test]
    fn two_quick_rotations_never_leave_a_gap() {
        // The middle key never signed; the oldest signs until the newest is eligible.
        let keys = [1000, 5000, 5100];
        assert_eq!(
            roles(&keys, 5350, SCHEDULE),
            [Role::Retired, Role::Signing, Role::Next]
        );
        assert_eq!(
            roles(&keys, 5400, SCHEDULE),
            [Role::Retired, Role::Retired, Role::Signing]
        );
        // At every second some key signs and every key that may have signed a live token
        // is published.
        for now in 1000..8000 {
            let roles = roles(&keys, now, SCHEDULE);
            assert_eq!(roles.iter().filter(|r| **r == Role::Signing).count(), 1);
        }
    }

    #[test]
    fn a_key_dated_in_the_future_is_only_published() {
        assert_eq!(
            roles(&[1000, 9000], 2000, SCHEDULE),
            [Role::Signing, Role::Next]
        );
    }
}
