//! POSIX shared memory and message queues across domains: a file in /dev/shm or a queue made
//! outside any domain, or in another domain, is refused to a task in a domain for every
//! operation; the same operation succeeds from outside any domain and within the domain that
//! made it.

use std::{
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use crate::{
    access::Outcome,
    harness::Suite,
    refusal_records::{Names, is_refusal_by, label_for},
    scenarios::{exe, expect, run_helper},
    scenarios_audit::{log_len, wait_for_record},
    shm_access::{create, operations, remove},
};

const KINDS: [&str; 2] = ["shm", "mq"];

fn fresh_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("bulkhead-test-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Who makes the object a test reaches for.
#[derive(Clone, Copy)]
enum Maker {
    Outside,
    OtherDomain,
}

fn make(kind: &str, name: &str, maker: Maker) -> Result<(), String> {
    match maker {
        Maker::Outside => create(kind, name),
        Maker::OtherDomain => {
            let output = Command::new("bulkhead")
                .args(["exec", "--label", "shm-maker", "--", &exe(), "helper"])
                .args(["shm-create", kind, name])
                .stdin(Stdio::null())
                .output()
                .map_err(|err| err.to_string())?;
            if output.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "shm-create: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ))
            }
        }
    }
}

fn try_op(kind: &str, op: &str, maker: Maker, sealed: bool) -> Result<Outcome, String> {
    let name = fresh_name();
    make(kind, &name, maker)?;
    let label = label_for(&format!("{kind}-{op}-{name}"));
    let offset = log_len();
    let outcome = run_helper(sealed, &label, &["shm-op", kind, &name, op], &[]);
    remove(kind, &name);
    if sealed && outcome == Outcome::Denied {
        let fs = if kind == "mq" { "mqueue" } else { "tmpfs" };
        let expected: Vec<_> = ["inode_permission", "inode_setattr", "inode_unlink"]
            .into_iter()
            .map(|hook| (hook, Names::FsObject(fs)))
            .collect();
        wait_for_record(offset, |record| is_refusal_by(record, &label, &expected))?;
    }
    Ok(outcome)
}

pub fn add(suite: &mut Suite<'_>) {
    for kind in KINDS {
        for op in operations(kind) {
            suite.add(format!("deny:{kind}-{op}:outside-object"), move || {
                expect(try_op(kind, op, Maker::Outside, true)?, Outcome::Denied)
            });
            suite.add(format!("deny:{kind}-{op}:other-domain-object"), move || {
                expect(try_op(kind, op, Maker::OtherDomain, true)?, Outcome::Denied)
            });
            suite.add(format!("control-outside:{kind}-{op}"), move || {
                expect(
                    try_op(kind, op, Maker::OtherDomain, false)?,
                    Outcome::Allowed,
                )
            });
        }
        suite.add(format!("control-same-domain:{kind}"), move || {
            let name = fresh_name();
            let outcome = run_helper(true, "shm-same", &["shm-same-domain", kind, &name], &[]);
            remove(kind, &name);
            expect(outcome, Outcome::Allowed)
        });
    }
    suite.add("audit:shm-denial-recorded", shm_denial_recorded);
}

/// The refusal's record names the filesystem and the object's owner (none).
fn shm_denial_recorded() -> Result<(), String> {
    let offset = log_len();
    let name = fresh_name();
    make("shm", &name, Maker::Outside)?;
    let outcome = run_helper(true, "shm-audited", &["shm-op", "shm", &name, "read"], &[]);
    remove("shm", &name);
    expect(outcome, Outcome::Denied)?;
    let record = wait_for_record(offset, |r| {
        r["actor"]["label"] == "shm-audited" && r["hook"] == "inode_permission"
    })?;
    if record["fs_object"]["fs"] != "tmpfs" || !record["fs_object"]["domain"].is_null() {
        return Err(format!("fs_object fields wrong in {record}"));
    }
    Ok(())
}
