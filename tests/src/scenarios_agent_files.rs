//! Agent self-protection on disk (issue: complete enforcement, section 3): the bpffs pin
//! directory and the state directory, as root inside a domain. Each denial has the same access
//! from outside any domain as its control; destructive ones use a symlink the suite places in
//! the pin directory first, so the real pins are never touched.

use crate::{access::Outcome, harness::Suite, scenarios_files::file};

const PIN_DIR: &str = "/sys/fs/bpf/bulkhead";
const PIN_MAPS: &str = "/sys/fs/bpf/bulkhead/maps";
const STATE_DIR: &str = "/var/lib/bulkhead";
const STATE_DB: &str = "/var/lib/bulkhead/state.redb";

pub fn add(suite: &mut Suite<'_>) {
    for (name, args) in [
        ("list-pin-dir", vec!["list", PIN_MAPS]),
        ("list-state-dir", vec!["list", STATE_DIR]),
        ("read-state-db", vec!["read", STATE_DB]),
    ] {
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        let denied = args.clone();
        suite.add(format!("deny:agent-{name}:root-in-domain"), move || {
            file(true, &denied, Outcome::Denied)
        });
        suite.add(format!("control-outside:agent-{name}"), move || {
            file(false, &args, Outcome::Allowed)
        });
    }
    for op in ["unlink", "rename"] {
        suite.add(format!("deny:agent-pin-{op}:root-in-domain"), move || {
            file(true, &probe_access(op, &place_probe(op)?), Outcome::Denied)
        });
        suite.add(format!("control-outside:agent-pin-{op}"), move || {
            let probe = place_probe(op)?;
            let done = file(false, &probe_access(op, &probe), Outcome::Allowed);
            let _ = std::fs::remove_file(&probe);
            let _ = std::fs::remove_file(format!("{probe}-moved"));
            done
        });
    }
}

fn probe_access(op: &str, probe: &str) -> Vec<String> {
    match op {
        "rename" => vec!["rename-to".into(), probe.into(), format!("{probe}-moved")],
        _ => vec![op.into(), probe.into()],
    }
}

/// A symlink in the pin directory (bpffs supports them) standing in for a pin.
fn place_probe(op: &str) -> Result<String, String> {
    let probe = format!("{PIN_DIR}/probe-{op}");
    match std::os::unix::fs::symlink("probe-target", &probe) {
        Ok(()) => Ok(probe),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(probe),
        Err(err) => Err(format!("placing {probe}: {err}")),
    }
}
