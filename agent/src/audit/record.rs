//! Turns a kernel audit event into the JSON object written to the audit log.

use std::path::PathBuf;

use bulkhead_common::audit::{
    AuditEvent, DECISION_AUDITED, DECISION_DENIED, TARGET_DEVICE, TARGET_FS_OBJECT, TARGET_INODE,
    TARGET_IPC, TARGET_KEY, TARGET_SOCKET, TARGET_TASK, hook_name,
};
use serde_json::{Value, json};

use crate::domains::EndedDomain;

/// What the agent adds to the kernel's facts.
pub struct Context<'a> {
    /// Wall-clock time of the event, RFC 3339.
    pub time: String,
    pub actor_label: Option<&'a str>,
    pub target_label: Option<&'a str>,
    /// Where the agent knows the protected inode from.
    pub path: Option<PathBuf>,
}

fn comm(bytes: &[u8; 16]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// A domain id as the record shows it: null outside every domain, "undecidable" when the
/// programs could not read the task's label (and refused).
fn domain(id: u64) -> Value {
    match id {
        bulkhead_common::NO_DOMAIN => Value::Null,
        bulkhead_common::UNDECIDABLE => json!("undecidable"),
        id => json!(id),
    }
}

/// The start of a Unix socket's address as the record shows it: a path, or `@name` for the
/// abstract namespace (whose names start with a NUL byte); empty for an unnamed socket.
fn socket_name(bytes: &[u8; 16]) -> String {
    match bytes.split_first() {
        Some((0, rest)) if rest.iter().any(|b| *b != 0) => {
            // Abstract names may hold NUL bytes; they are shown as `@`, as ss(8) does.
            let end = rest.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
            let shown: Vec<u8> = rest[..end]
                .iter()
                .map(|b| if *b == 0 { b'@' } else { *b })
                .collect();
            format!("@{}", String::from_utf8_lossy(&shown))
        }
        _ => comm(bytes),
    }
}

/// The name of a filesystem bulkhead judges files of, by its magic number (include/uapi/linux/magic.h).
fn kernel_fs(magic: u32) -> &'static str {
    match magic {
        0x9fa0 => "proc",
        0x0027_e0eb => "cgroup",
        0x6367_7270 => "cgroup2",
        0x6265_6572 => "sysfs",
        0x7363_6673 => "securityfs",
        0x7472_6163 => "tracefs",
        0x6462_6720 => "debugfs",
        0x6265_6570 => "configfs",
        0x6165_676c => "pstore",
        0xde5e_81e4 => "efivarfs",
        0xf97c_ff8c => "selinuxfs",
        0x4341_5d53 => "smackfs",
        0xcafe_4a11 => "bpf",
        0x0102_1994 => "tmpfs",
        0x1cd1 => "devpts",
        0x4249_4e4d => "binfmt_misc",
        0x0765_5821 => "resctrl",
        0x6573_5543 => "fusectl",
        0x6e66_7364 => "nfsd",
        0x1980_0202 => "mqueue",
        _ => "unknown",
    }
}

/// Linux `dev_t` as the kernel stores it (12-bit major, 20-bit minor) to "major:minor".
fn device(dev: u64) -> String {
    format!("{}:{}", dev >> 20, dev & 0xf_ffff)
}

pub fn to_json(event: &AuditEvent, context: &Context<'_>) -> Value {
    let decision = match event.decision {
        DECISION_DENIED => "denied",
        DECISION_AUDITED => "audit-allowed",
        _ => "unknown",
    };
    let mut record = json!({
        "time": context.time,
        "type": "access",
        "hook": hook_name(event.hook),
        "decision": decision,
        "access": event.access,
        "actor": {
            "pid": event.actor_tgid,
            "tid": event.actor_pid,
            "uid": event.actor_uid,
            "comm": comm(&event.actor_comm),
            "domain": domain(event.actor_domain),
            "label": context.actor_label,
        },
    });
    match event.target_kind {
        TARGET_TASK => {
            record["target"] = json!({
                "pid": event.target_tgid,
                "tid": event.target_pid,
                "comm": comm(&event.target_comm),
                "domain": domain(event.target_domain),
                "label": context.target_label,
            });
        }
        TARGET_INODE => {
            record["file"] = json!({
                "device": device(event.dev),
                "inode": event.inode,
                "path": context.path.as_ref().map(|p| p.display().to_string()),
            });
        }
        TARGET_IPC => {
            record["ipc"] = json!({
                "id": event.ipc_id,
                "key": event.inode as u32 as i32,
                "domain": domain(event.target_domain),
                "label": context.target_label,
            });
        }
        TARGET_FS_OBJECT => {
            record["fs_object"] = json!({
                "fs": kernel_fs(event.ipc_id),
                "device": device(event.dev),
                "inode": event.inode,
                "domain": domain(event.target_domain),
                "label": context.target_label,
            });
        }
        TARGET_DEVICE => {
            record["device"] = json!({
                "number": device(u64::from(event.ipc_id)),
                "file_device": device(event.dev),
                "file_inode": event.inode,
            });
        }
        TARGET_KEY => {
            record["key"] = json!({
                "serial": event.ipc_id as i32,
                "domain": domain(event.target_domain),
                "label": context.target_label,
            });
        }
        TARGET_SOCKET => {
            let bound = event.inode != 0;
            record["socket"] = json!({
                "name": socket_name(&event.target_comm),
                "domain": domain(event.target_domain),
                "label": context.target_label,
                "device": bound.then(|| device(event.dev)),
                "inode": bound.then_some(event.inode),
            });
        }
        _ => {}
    }
    record
}

/// The record of a domain whose last task has exited.
pub fn domain_ended(ended: &EndedDomain, time: String) -> Value {
    let record = &ended.record;
    let lifetime = ended
        .ended
        .duration_since(std::time::UNIX_EPOCH + std::time::Duration::from_secs(record.created))
        .map_or(0, |d| d.as_secs());
    json!({
        "time": time,
        "type": "domain_ended",
        "domain": record.id,
        "label": record.label.as_ref().map(|l| l.as_str()),
        "sealed_pid": record.sealed_pid,
        "sealed_uid": record.sealed_uid,
        "lifetime_secs": lifetime,
        "noticed": ended.noticed,
    })
}

#[cfg(test)]
mod tests {
    use bulkhead_common::audit::hook;

    use super::*;

    /// A context at time "t" with the given labels and no path.
    fn labelled(actor: Option<&'static str>, target: Option<&'static str>) -> Context<'static> {
        Context {
            time: "t".into(),
            actor_label: actor,
            target_label: target,
            path: None,
        }
    }

    fn comm_bytes(name: &str) -> [u8; 16] {
        let mut bytes = [0; 16];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        bytes
    }

    #[test]
    fn a_device_refusal_names_the_device_number() {
        let mut event = AuditEvent::zeroed();
        event.hook = hook::INODE_PERMISSION;
        event.decision = DECISION_DENIED;
        event.target_kind = TARGET_DEVICE;
        event.ipc_id = (7 << 20) | 3;
        event.dev = 5;
        event.inode = 42;
        let value = to_json(&event, &labelled(Some("dag.task"), None));
        assert_eq!(value["device"]["number"], "7:3");
        assert_eq!(value["device"]["file_device"], "0:5");
        assert_eq!(value["device"]["file_inode"], 42);
    }

    #[test]
    fn a_task_denial_names_both_sides() {
        let mut event = AuditEvent::zeroed();
        event.hook = hook::PTRACE_ACCESS_CHECK;
        event.decision = DECISION_DENIED;
        event.access = 0x11;
        event.actor_domain = 42;
        event.actor_pid = 101;
        event.actor_tgid = 100;
        event.actor_uid = 1000;
        event.actor_comm = comm_bytes("python3");
        event.target_kind = TARGET_TASK;
        event.target_pid = 7;
        event.target_tgid = 7;
        event.target_comm = comm_bytes("airflow supervi");
        let value = to_json(
            &event,
            &Context {
                time: "2026-11-23T08:00:00Z".into(),
                actor_label: Some("dag.task"),
                target_label: None,
                path: None,
            },
        );
        assert_eq!(value["hook"], "ptrace_access_check");
        assert_eq!(value["decision"], "denied");
        assert_eq!(value["actor"]["pid"], 100);
        assert_eq!(value["actor"]["tid"], 101);
        assert_eq!(value["actor"]["comm"], "python3");
        assert_eq!(value["actor"]["domain"], 42);
        assert_eq!(value["actor"]["label"], "dag.task");
        assert_eq!(value["target"]["domain"], Value::Null, "outside any domain");
        assert_eq!(value["target"]["comm"], "airflow supervi");
        assert!(value.get("file").is_none());
    }

    #[test]
    fn a_file_denial_carries_device_inode_and_known_path() {
        let mut event = AuditEvent::zeroed();
        event.hook = hook::INODE_PERMISSION;
        event.decision = DECISION_AUDITED;
        event.target_kind = TARGET_INODE;
        event.dev = (8 << 20) | 1;
        event.inode = 1234;
        let value = to_json(
            &event,
            &Context {
                time: "t".into(),
                actor_label: None,
                target_label: None,
                path: Some("/etc/airflow/airflow.cfg".into()),
            },
        );
        assert_eq!(value["decision"], "audit-allowed");
        assert_eq!(value["file"]["device"], "8:1");
        assert_eq!(value["file"]["inode"], 1234);
        assert_eq!(value["file"]["path"], "/etc/airflow/airflow.cfg");
    }

    #[test]
    fn an_ipc_denial_names_the_object_and_its_owner() {
        let mut event = AuditEvent::zeroed();
        event.hook = hook::IPC_PERMISSION;
        event.decision = DECISION_DENIED;
        event.target_kind = TARGET_IPC;
        event.target_domain = 0;
        event.ipc_id = 32769;
        event.inode = u64::from(0xdead_beef_u32);
        let value = to_json(&event, &labelled(Some("dag.task"), None));
        assert_eq!(value["hook"], "ipc_permission");
        assert_eq!(value["ipc"]["id"], 32769);
        assert_eq!(
            value["ipc"]["key"], 0xdead_beef_u32 as i32,
            "keys are signed, as ipcs shows"
        );
        assert_eq!(
            value["ipc"]["domain"],
            Value::Null,
            "made outside any domain"
        );
        assert!(value.get("target").is_none() && value.get("file").is_none());
    }

    #[test]
    fn a_socket_denial_names_the_socket_and_its_owner() {
        let context = labelled(Some("dag.task"), Some("other.task"));
        let mut event = AuditEvent::zeroed();
        event.hook = hook::UNIX_STREAM_CONNECT;
        event.decision = DECISION_DENIED;
        event.target_kind = TARGET_SOCKET;
        event.target_domain = 77;
        event.target_comm[1..9].copy_from_slice(b"sup\0port");
        let value = to_json(&event, &context);
        assert_eq!(value["hook"], "unix_stream_connect");
        assert_eq!(value["socket"]["name"], "@sup@port");
        assert_eq!(value["socket"]["domain"], 77);
        assert_eq!(value["socket"]["label"], "other.task");
        assert!(
            value["socket"]["inode"].is_null(),
            "abstract: no socket file"
        );

        event.target_comm = [0; 16];
        event.target_comm[..8].copy_from_slice(b"/dev/log");
        event.inode = 42;
        event.dev = (8 << 20) | 1;
        let value = to_json(&event, &context);
        assert_eq!(value["socket"]["name"], "/dev/log");
        assert_eq!(value["socket"]["inode"], 42);
        assert_eq!(value["socket"]["device"], "8:1");
    }

    #[test]
    fn a_key_denial_names_the_serial_and_the_creator() {
        let mut event = AuditEvent::zeroed();
        event.hook = hook::KEY_PERMISSION;
        event.decision = DECISION_DENIED;
        event.target_kind = TARGET_KEY;
        event.access = 2;
        event.ipc_id = 912_345_678;
        let value = to_json(&event, &labelled(Some("dag.task"), None));
        assert_eq!(value["hook"], "key_permission");
        assert_eq!(value["key"]["serial"], 912_345_678);
        assert!(value["key"]["domain"].is_null());
    }

    #[test]
    fn a_kernel_file_denial_names_the_filesystem() {
        let mut event = AuditEvent::zeroed();
        event.hook = hook::INODE_PERMISSION;
        event.decision = DECISION_DENIED;
        event.target_kind = TARGET_FS_OBJECT;
        event.ipc_id = 0x6367_7270;
        event.inode = 5;
        let value = to_json(&event, &labelled(None, None));
        assert_eq!(value["fs_object"]["fs"], "cgroup2");
        assert_eq!(value["fs_object"]["inode"], 5);
        assert!(value["fs_object"]["domain"].is_null());
    }

    #[test]
    fn a_domain_end_names_the_domain_and_how_it_was_noticed() {
        use crate::domains::{DomainRecord, Label, Noticed};
        let created = 1_700_000_000;
        let ended = EndedDomain {
            record: DomainRecord {
                id: 9,
                label: Some(Label::try_from("etl:load".to_owned()).unwrap()),
                created,
                sealed_pid: 300,
                sealed_uid: 1000,
                task: None,
            },
            ended: std::time::UNIX_EPOCH + std::time::Duration::from_secs(created + 75),
            noticed: Noticed::Event,
        };
        let value = domain_ended(&ended, "t".into());
        assert_eq!(value["type"], "domain_ended");
        assert_eq!(value["domain"], 9);
        assert_eq!(value["label"], "etl:load");
        assert_eq!(value["lifetime_secs"], 75);
        assert_eq!(value["noticed"], "event");
    }
}
