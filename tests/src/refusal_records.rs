//! A refusal is only half shown until its audit record is found: every `deny:` case that uses
//! this module runs its attacker under a label of its own, expects the refusal, and then
//! waits for a record from that label that names the hook and the object refused.
//!
//! The expected hooks are listed per access because the kernel asks more than one hook on some
//! paths (`perf_event_open` asks `capable` before `ptrace_access_check`); a record of any of
//! them, naming the right target, shows the refusal was bulkhead's and was written down.

use serde_json::Value;

use crate::{
    access::Outcome,
    scenarios::{expect, run_helper},
    scenarios_audit::{log_len, wait_for_record},
};

/// What a record must name besides the hook.
#[derive(Clone, Copy, Debug)]
pub enum Names {
    /// A task by its process id (`target.pid`).
    Task(i32),
    /// A file judged by its filesystem (`fs_object.fs`: "proc", "sysfs", "cgroup2", ...).
    FsObject(&'static str),
    /// A protected file (`file.inode`).
    File,
    /// A Unix socket (`socket`).
    Socket,
    /// A System V IPC object by its id (`ipc.id`).
    Ipc(i32),
    /// A key by its serial number (`key.serial`), or any key.
    Key(Option<i32>),
    /// A device file (`device.number`).
    Device,
    /// No object: a refused capability or operation (`capable`, `bpf`, ...).
    Operation,
}

impl Names {
    fn matches(self, record: &Value) -> bool {
        match self {
            Names::Task(pid) => record["target"]["pid"] == pid,
            Names::FsObject(fs) => record["fs_object"]["fs"] == fs,
            Names::File => record["file"]["inode"].is_u64(),
            Names::Socket => record["socket"].is_object(),
            Names::Ipc(id) => record["ipc"]["id"] == id,
            Names::Key(Some(serial)) => record["key"]["serial"] == serial,
            Names::Key(None) => record["key"]["serial"].is_number(),
            Names::Device => record["device"]["number"].is_string(),
            Names::Operation => true,
        }
    }
}

/// Whether `record` is a refusal by `label`'s domain that one of `expected` describes.
pub fn is_refusal_by(record: &Value, label: &str, expected: &[(&str, Names)]) -> bool {
    record["type"] == "access"
        && record["decision"] == "denied"
        && record["actor"]["label"] == label
        && expected
            .iter()
            .any(|(hook, names)| record["hook"] == *hook && names.matches(record))
}

/// Runs the helper with `args` sealed into a fresh domain labelled `label`, expects it to be
/// refused, then waits for the audit record of that refusal.
pub fn refused_and_recorded(
    label: &str,
    args: &[&str],
    env: &[(&str, &str)],
    expected: &[(&str, Names)],
) -> Result<(), String> {
    let offset = log_len();
    expect(run_helper(true, label, args, env), Outcome::Denied)?;
    wait_for_record(offset, |record| is_refusal_by(record, label, expected))
        .map(drop)
        .map_err(|err| format!("refused, but {err}; wanted one of {expected:?}"))
}

/// A label for a case's attacker, made from the case's name: unique in the suite, so no record
/// of an earlier case can be taken for this one's.
pub fn label_for(case: &str) -> String {
    let label: String = case
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':') {
                c
            } else {
                '-'
            }
        })
        .collect();
    label.chars().take(64).collect()
}
