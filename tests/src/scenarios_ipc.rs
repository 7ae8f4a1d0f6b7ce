//! System V IPC across domains: an object made outside any domain, or in another domain, is
//! refused to a task in a domain for every operation; the same operation succeeds from outside
//! any domain, and within the domain that made the object.

use std::{
    process::{Command, Stdio},
    sync::atomic::{AtomicI32, Ordering},
};

use crate::{
    access::Outcome,
    harness::Suite,
    refusal_records::{Names, is_refusal_by, label_for},
    scenarios::{exe, expect, run_helper},
    scenarios_audit::{log_len, wait_for_record},
};

const KINDS: [&str; 3] = ["shm", "msg", "sem"];

/// Keys unique within a run, so no test meets another's object.
fn fresh_key() -> i32 {
    static NEXT: AtomicI32 = AtomicI32::new(0x4248_0000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Who makes the object a test attacks.
#[derive(Clone, Copy)]
enum Maker {
    Outside,
    OtherDomain,
}

/// Creates an object of `kind` under `key` (from a helper, sealed in a domain of its own when
/// `maker` says so; the object outlives it). Returns its id.
fn make(kind: &str, key: i32, maker: Maker) -> Result<i32, String> {
    let key = key.to_string();
    let mut cmd = match maker {
        Maker::Outside => {
            let mut cmd = Command::new(exe());
            cmd.arg("helper");
            cmd
        }
        Maker::OtherDomain => {
            let mut cmd = Command::new("bulkhead");
            cmd.args(["exec", "--label", "ipc-maker", "--", &exe(), "helper"]);
            cmd
        }
    };
    let output = cmd
        .args(["ipc-create", kind, &key])
        .stdin(Stdio::null())
        .output()
        .map_err(|err| err.to_string())?;
    if !output.status.success() {
        return Err(format!(
            "ipc-create: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .map_err(|err| format!("ipc-create printed no id: {err}"))
}

fn remove(kind: &str, key: i32, id: i32) {
    let _ = run_helper(
        false,
        "",
        &["ipc-op", kind, &key.to_string(), &id.to_string(), "rmid"],
        &[],
    );
}

/// The hooks that judge System V IPC: every use asks `ipc_permission` (through ipcperms), the
/// control commands their own hook.
const IPC_HOOKS: [&str; 4] = [
    "ipc_permission",
    "shm_shmctl",
    "msg_queue_msgctl",
    "sem_semctl",
];

/// Makes an object, tries `op` on it (from a fresh domain when `sealed`), removes it. A refusal
/// from a domain must also leave its audit record, naming the object.
fn try_op(kind: &str, op: &str, maker: Maker, sealed: bool) -> Result<Outcome, String> {
    let key = fresh_key();
    let id = make(kind, key, maker)?;
    let label = label_for(&format!("ipc-{kind}-{op}-{key}"));
    let offset = log_len();
    let outcome = run_helper(
        sealed,
        &label,
        &["ipc-op", kind, &key.to_string(), &id.to_string(), op],
        &[],
    );
    remove(kind, key, id);
    if sealed && outcome == Outcome::Denied {
        let expected: Vec<_> = IPC_HOOKS.iter().map(|h| (*h, Names::Ipc(id))).collect();
        wait_for_record(offset, |record| is_refusal_by(record, &label, &expected))?;
    }
    Ok(outcome)
}

pub fn add(suite: &mut Suite<'_>) {
    for kind in KINDS {
        for op in crate::ipc_access::operations(kind) {
            suite.add(format!("deny:ipc-{kind}-{op}:outside-object"), move || {
                expect(try_op(kind, op, Maker::Outside, true)?, Outcome::Denied)
            });
            suite.add(
                format!("deny:ipc-{kind}-{op}:other-domain-object"),
                move || expect(try_op(kind, op, Maker::OtherDomain, true)?, Outcome::Denied),
            );
            suite.add(format!("control-outside:ipc-{kind}-{op}"), move || {
                expect(
                    try_op(kind, op, Maker::OtherDomain, false)?,
                    Outcome::Allowed,
                )
            });
        }
        suite.add(format!("control-same-domain:ipc-{kind}"), move || {
            let key = fresh_key().to_string();
            expect(
                run_helper(true, "ipc-same", &["ipc-same-domain", kind, &key], &[]),
                Outcome::Allowed,
            )
        });
    }
    suite.add("audit:ipc-denial-recorded", ipc_denial_recorded);
}

/// The refusal's record names the hook, the object's id and key, and its owner (none).
fn ipc_denial_recorded() -> Result<(), String> {
    let offset = log_len();
    let key = fresh_key();
    let id = make("shm", key, Maker::Outside)?;
    let outcome = run_helper(
        true,
        "ipc-audited",
        &["ipc-op", "shm", &key.to_string(), &id.to_string(), "use"],
        &[],
    );
    remove("shm", key, id);
    expect(outcome, Outcome::Denied)?;
    let record = wait_for_record(offset, |r| {
        r["actor"]["label"] == "ipc-audited" && r["hook"] == "ipc_permission"
    })?;
    if record["ipc"]["id"] != id
        || record["ipc"]["key"] != key
        || !record["ipc"]["domain"].is_null()
    {
        return Err(format!("ipc fields wrong in {record}"));
    }
    Ok(())
}
