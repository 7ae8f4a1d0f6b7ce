//! Protected files (issue: complete enforcement, section 1). Fixtures: fixtures.rs; policy:
//! tests/vm/node.toml.

use crate::{
    access::Outcome,
    fixtures::{
        GLOB_MATCH, GLOB_OTHER, HARDLINK, KEY_IN_DIR, KEYS_DIR, PUBLIC, REPLACED, ROOT, SECRET,
        SECRET_EXEC, SECRET_VIA_BIND, SYMLINK, VICTIM_OPS, victim,
    },
    harness::Suite,
    scenarios::{expect, run_helper},
};

/// Each access to a protected inode: (test name, helper `file` arguments).
fn protected_accesses() -> Vec<(&'static str, Vec<String>)> {
    let v = |args: &[&str]| args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
    vec![
        ("read", v(&["read", SECRET])),
        ("read-hardlink-made-before-marking", v(&["read", HARDLINK])),
        ("read-via-symlink", v(&["read", SYMLINK])),
        ("read-via-bind-mount", v(&["read", SECRET_VIA_BIND])),
        ("read-openat2", v(&["openat2", SECRET])),
        (
            "read-relative-to-dirfd",
            v(&["openat-relative", ROOT, "secret.cfg"]),
        ),
        (
            "reopen-opath-via-proc-self-fd",
            v(&["opath-reopen", SECRET]),
        ),
        ("open-for-write", v(&["write", SECRET])),
        ("exec", v(&["exec", SECRET_EXEC])),
        ("read-glob-match", v(&["read", GLOB_MATCH])),
        ("list-protected-dir", v(&["list", KEYS_DIR])),
        ("read-below-protected-dir", v(&["read", KEY_IN_DIR])),
        ("create-in-protected-dir", v(&["create", KEYS_DIR])),
    ]
}

pub fn add(suite: &mut Suite<'_>) {
    for (name, args) in protected_accesses() {
        let denied = args.clone();
        suite.add(format!("deny:file-{name}"), move || {
            file(true, &denied, Outcome::Denied)
        });
        suite.add(format!("control-outside:file-{name}"), move || {
            file(false, &args, Outcome::Allowed)
        });
    }
    // Destructive operations: denied inside the domain (the victim must survive unchanged for
    // the control to work), then done from outside.
    for op in VICTIM_OPS {
        let path = victim(op);
        let args = vec![op.to_owned(), path];
        let denied = args.clone();
        suite.add(format!("deny:file-{op}"), move || {
            file(true, &denied, Outcome::Denied)
        });
        suite.add(format!("control-outside:file-{op}"), move || {
            file(false, &args, Outcome::Allowed)
        });
    }
    // Controls inside a domain: what is not protected stays usable, so the denials above are
    // about the marks and not a domain that can do nothing.
    for (name, args) in [
        ("read-unprotected", vec!["read", PUBLIC]),
        ("read-glob-non-match", vec!["read", GLOB_OTHER]),
        ("list-parent-of-protected", vec!["list", ROOT]),
        ("create-beside-protected", vec!["create", ROOT]),
    ] {
        let args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        suite.add(format!("control-domain:file-{name}"), move || {
            file(true, &args, Outcome::Allowed)
        });
    }
    suite.add(
        "deny:file-created-later-in-protected-dir",
        created_later_is_protected,
    );
    suite.add(
        "file:replaced-by-rename-is-protected-again",
        replaced_is_protected_again,
    );
}

pub(crate) fn file(sealed: bool, args: &[String], want: Outcome) -> Result<(), String> {
    let mut argv = vec!["file"];
    argv.extend(args.iter().map(String::as_str));
    expect(run_helper(sealed, "files", &argv, &[]), want)
}

/// A file created in a protected directory is marked by the kernel as it is created, not by a
/// later rescan: the only other name it ever has is made and the protected one removed within
/// microseconds, leaving a name no pattern matches.
fn created_later_is_protected() -> Result<(), String> {
    let inside = format!("{KEYS_DIR}/later.pem");
    let outside = format!("{ROOT}/later-link.pem");
    std::fs::write(&inside, "created after the agent\n").map_err(|e| e.to_string())?;
    std::fs::hard_link(&inside, &outside).map_err(|e| e.to_string())?;
    std::fs::remove_file(&inside).map_err(|e| e.to_string())?;
    let args = vec!["read".to_owned(), outside];
    file(true, &args, Outcome::Denied)?;
    file(false, &args, Outcome::Allowed)
}

/// An administrator replaces a protected file by write-and-rename; the new inode is marked by
/// the rename itself, so the very first read after it is refused (no polling, no rescan).
fn replaced_is_protected_again() -> Result<(), String> {
    let read = vec!["read".to_owned(), REPLACED.to_owned()];
    file(true, &read, Outcome::Denied)?;
    let tmp = format!("{REPLACED}.new");
    std::fs::write(&tmp, "v2\n").map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, REPLACED).map_err(|e| e.to_string())?;
    file(true, &read, Outcome::Denied)?;
    file(false, &read, Outcome::Allowed)
}
