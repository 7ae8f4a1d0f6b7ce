//! Protected names that do not exist yet: a task in a domain may not make one, by any call
//! that makes a name (create, mkdir, mknod, symlink, link, rename), nor put a symlink or a
//! directory of its own on a protected pattern's way; outside every domain all of it works,
//! and in a domain names beside the protected ones can still be made.

use crate::{
    access::Outcome,
    fixtures::{ABSENT, ABSENT_BESIDE, ON_THE_WAY},
    harness::Suite,
    scenarios_files::file,
};

pub fn add(suite: &mut Suite<'_>) {
    let cases: [(&str, &str, &str); 8] = [
        ("create-protected", "create-at", ABSENT),
        ("mkdir-protected", "mkdir-at", ABSENT),
        ("mkfifo-protected", "mkfifo-at", ABSENT),
        ("symlink-protected", "symlink-at", ABSENT),
        ("link-own-file-to-protected", "link-own-to", ABSENT),
        ("rename-own-file-to-protected", "rename-own-to", ABSENT),
        ("symlink-on-the-way", "symlink-at", ON_THE_WAY),
        (
            "rename-own-dir-onto-the-way",
            "rename-own-dir-to",
            ON_THE_WAY,
        ),
    ];
    for (name, op, path) in cases {
        let args = vec![op.to_owned(), path.to_owned()];
        let denied = args.clone();
        suite.add(format!("deny:name-{name}"), move || {
            file(true, &denied, Outcome::Denied)
        });
        suite.add(format!("control-outside:name-{name}"), move || {
            file(false, &args, Outcome::Allowed)
        });
    }
    for (name, op, path) in [
        ("create-beside-protected", "create-at", ABSENT_BESIDE),
        ("symlink-beside-protected", "symlink-at", ABSENT_BESIDE),
        // A directory on the way may be made: it is guarded from its creation.
        ("mkdir-on-the-way", "mkdir-at", ON_THE_WAY),
    ] {
        let args = vec![op.to_owned(), path.to_owned()];
        suite.add(format!("control-domain:name-{name}"), move || {
            file(true, &args, Outcome::Allowed)
        });
    }
}
