//! Keys and keyrings across domains: a key made outside any domain (in the user keyring, where
//! every process of the uid finds it), or in another domain, is refused to a task in a domain
//! for every operation; the same operation succeeds from outside any domain and within the
//! domain that made the key. KEYCTL_SESSION_TO_PARENT is refused inside domains.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use crate::{
    access::Outcome,
    harness::Suite,
    key_access::{KEY_SPEC_USER_KEYRING, OPS},
    refusal_records::{Names, is_refusal_by, label_for, refused_and_recorded},
    scenarios::{exe, expect, run_helper},
    scenarios_audit::{log_len, wait_for_record},
};

fn fresh_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("bulkhead-test-key-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A key in root's user keyring, made by this (outside) process; unlinked when dropped.
struct OutsideKey {
    serial: i32,
    name: String,
}

impl OutsideKey {
    fn new() -> Result<Self, String> {
        let name = fresh_name();
        let serial = crate::key_access::add(&name, KEY_SPEC_USER_KEYRING)?;
        Ok(Self { serial, name })
    }
}

impl Drop for OutsideKey {
    fn drop(&mut self) {
        const KEYCTL_UNLINK: libc::c_long = 9;
        // SAFETY: keyctl with integer arguments.
        unsafe {
            libc::syscall(
                libc::SYS_keyctl,
                KEYCTL_UNLINK,
                libc::c_long::from(self.serial),
                KEY_SPEC_USER_KEYRING,
            )
        };
    }
}

/// A helper sealed in a domain of its own, holding a key in its own session keyring.
struct DomainKey {
    child: Child,
    serial: i32,
    name: String,
}

impl DomainKey {
    fn new() -> Result<Self, String> {
        let name = fresh_name();
        let mut child = Command::new("bulkhead")
            .args([
                "exec",
                "--label",
                "key-maker",
                "--",
                &exe(),
                "helper",
                "key-serve",
                &name,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|err| format!("starting the key maker: {err}"))?;
        let mut line = String::new();
        let read = BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line);
        let serial = read.ok().and_then(|_| line.trim().parse().ok());
        match serial {
            Some(serial) => Ok(Self {
                child,
                serial,
                name,
            }),
            None => {
                drop(child.stdin.take());
                let _ = child.wait();
                Err(format!("key maker printed {line:?}"))
            }
        }
    }
}

impl Drop for DomainKey {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Tries `op` on the key (from a fresh domain when `sealed`); a refusal from a domain must also
/// leave its `key_permission` record, naming the key (a search, the keyring it looked in or
/// the key it found).
fn key_op(sealed: bool, op: &str, serial: i32, name: &str) -> Result<Outcome, String> {
    let label = label_for(&format!("key-{op}-{name}"));
    let offset = log_len();
    let outcome = run_helper(
        sealed,
        &label,
        &["key-op", op, &serial.to_string(), name],
        &[],
    );
    if sealed && outcome == Outcome::Denied {
        let names = if op == "search" {
            Names::Key(None)
        } else {
            Names::Key(Some(serial))
        };
        wait_for_record(offset, |record| {
            is_refusal_by(record, &label, &[("key_permission", names)])
        })?;
    }
    Ok(outcome)
}

pub fn add(suite: &mut Suite<'_>) {
    for op in OPS.into_iter().chain(["search"]) {
        suite.add(format!("deny:key-{op}:outside-key"), move || {
            let key = OutsideKey::new()?;
            expect(key_op(true, op, key.serial, &key.name)?, Outcome::Denied)
        });
        suite.add(format!("control-outside:key-{op}:outside-key"), move || {
            let key = OutsideKey::new()?;
            expect(key_op(false, op, key.serial, &key.name)?, Outcome::Allowed)
        });
    }
    for op in OPS {
        suite.add(format!("deny:key-{op}:other-domain-key"), move || {
            let key = DomainKey::new()?;
            expect(key_op(true, op, key.serial, &key.name)?, Outcome::Denied)
        });
        suite.add(
            format!("control-outside:key-{op}:other-domain-key"),
            move || {
                let key = DomainKey::new()?;
                expect(key_op(false, op, key.serial, &key.name)?, Outcome::Allowed)
            },
        );
    }
    suite.add("control-same-domain:keys", || {
        let name = fresh_name();
        expect(
            run_helper(true, "key-same", &["key-same-domain", &name], &[]),
            Outcome::Allowed,
        )
    });
    suite.add("deny:key-session-to-parent:in-domain", || {
        refused_and_recorded(
            "key-session-to-parent",
            &["key-session-to-parent"],
            &[],
            &[("cred_alloc_blank", Names::Operation)],
        )
    });
    suite.add("control-outside:key-session-to-parent", || {
        expect(
            run_helper(false, "", &["key-session-to-parent"], &[]),
            Outcome::Allowed,
        )
    });
    suite.add("audit:key-denial-recorded", key_denial_recorded);
}

/// The refusal's record names the hook, the key's serial, its creator's domain (none) and the
/// permission asked (KEY_NEED_VIEW, 1, for describe).
fn key_denial_recorded() -> Result<(), String> {
    let offset = log_len();
    let key = OutsideKey::new()?;
    let outcome = run_helper(
        true,
        "key-audited",
        &["key-op", "describe", &key.serial.to_string(), &key.name],
        &[],
    );
    expect(outcome, Outcome::Denied)?;
    // Finding the key also searches the keyrings the task holds (its inherited session keyring,
    // refused and recorded too): the record wanted is the one of the key itself.
    let record = wait_for_record(offset, |r| {
        r["actor"]["label"] == "key-audited"
            && r["hook"] == "key_permission"
            && r["key"]["serial"] == key.serial
    })?;
    if !record["key"]["domain"].is_null() || record["access"] != 1 {
        return Err(format!("key fields wrong in {record}"));
    }
    Ok(())
}
