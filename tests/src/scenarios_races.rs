//! Race tests for protected files (issue: protected files with no window). An administrator,
//! outside any domain, replaces a protected file 200 times by write-and-rename (what `sed -i`,
//! editors and config tools do) while a task reads the protected name in a tight loop; and
//! moves 200 files into a protected directory while a task reads hard links it made to them
//! first. Inside a domain not one read may succeed; outside one, the same loops read. The
//! counts are printed as `vm note` lines.

use std::{
    io::{BufRead, BufReader},
    os::unix::fs::MetadataExt,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    fixtures::{APPEARS, GLOB_DIR, KEYS_DIR, RACED, STAGING},
    harness::Suite,
    scenarios::exe,
};

const GENERATIONS: usize = 200;

pub fn add(suite: &mut Suite<'_>) {
    suite.add("race:replaced-200-times-never-read-in-domain", || {
        let counts = replace_while_reading(true)?;
        note("replaced by rename, reader in a domain", &counts);
        if counts.get("reads") != Some(&0) || counts.get("refused").is_none_or(|n| *n == 0) {
            return Err(format!("wanted no read and some refusals, got {counts:?}"));
        }
        Ok(())
    });
    suite.add("control-outside:race-replaced-read", || {
        let counts = replace_while_reading(false)?;
        note("replaced by rename, reader outside", &counts);
        if counts.get("reads").is_none_or(|n| *n == 0) || counts.get("generations") < Some(&2) {
            return Err(format!(
                "wanted reads of several generations, got {counts:?}"
            ));
        }
        Ok(())
    });
    suite.add("race:moved-into-protected-dir-never-read-in-domain", || {
        let counts = move_while_linked(true)?;
        note(
            "moved into a protected directory, reader in a domain",
            &counts,
        );
        if counts.get("reads") != Some(&0) || counts.get("linked").is_none_or(|n| *n == 0) {
            return Err(format!("wanted links made and no read, got {counts:?}"));
        }
        Ok(())
    });
    suite.add("control-outside:race-moved-read", || {
        let counts = move_while_linked(false)?;
        note("moved into a protected directory, reader outside", &counts);
        if counts.get("reads") != counts.get("linked") || counts.get("reads") == Some(&0) {
            return Err(format!("wanted every link read, got {counts:?}"));
        }
        Ok(())
    });
    suite.add("race:new-glob-match-never-read-in-domain", || {
        let counts = create_while_reading(true)?;
        note("new files matching a glob, reader in a domain", &counts);
        never_read(&counts)
    });
    suite.add("control-outside:race-new-glob-match-read", || {
        let counts = create_while_reading(false)?;
        note("new files matching a glob, reader outside", &counts);
        read_several(&counts)
    });
    suite.add(
        "race:new-symlink-at-glob-match-never-followed-in-domain",
        || {
            let counts = symlink_while_reading(true)?;
            note(
                "new symlinks matching a glob to unprotected files, reader in a domain",
                &counts,
            );
            never_read(&counts)
        },
    );
    suite.add(
        "control-outside:race-new-symlink-at-glob-match-followed",
        || {
            let counts = symlink_while_reading(false)?;
            note(
                "new symlinks matching a glob to unprotected files, reader outside",
                &counts,
            );
            read_several(&counts)
        },
    );
    suite.add("race:directory-appears-later-never-read-in-domain", || {
        let counts = nest_while_reading(true)?;
        note(
            "protected path whose directories appear later, reader in a domain",
            &counts,
        );
        never_read(&counts)
    });
    suite.add("control-outside:race-directory-appears-later-read", || {
        let counts = nest_while_reading(false)?;
        note(
            "protected path whose directories appear later, reader outside",
            &counts,
        );
        read_several(&counts)
    });
}

fn never_read(counts: &Counts) -> Result<(), String> {
    if counts.get("reads") != Some(&0) || counts.get("refused").is_none_or(|n| *n == 0) {
        return Err(format!("wanted no read and some refusals, got {counts:?}"));
    }
    Ok(())
}

fn read_several(counts: &Counts) -> Result<(), String> {
    if counts.get("generations") < Some(&2) {
        return Err(format!(
            "wanted reads of several generations, got {counts:?}"
        ));
    }
    Ok(())
}

/// An administrator makes 200 new files matching `glob/*.pem` while a task reads every
/// `*.pem` it can list there.
fn create_while_reading(sealed: bool) -> Result<Counts, String> {
    let path = |generation: usize| format!("{GLOB_DIR}/new-{generation}.pem");
    make_glob_matches_while_reading(
        sealed,
        "glob",
        |generation| std::fs::write(path(generation), format!("new-{generation}\n")),
        |generation| {
            let _ = std::fs::remove_file(path(generation));
        },
        &format!("creating in {GLOB_DIR}"),
    )
}

/// An administrator makes 200 symlinks matching `glob/*.pem`, each to a new file in an
/// unprotected directory, while a task reads every `*.pem` it can list there (following the
/// links).
fn symlink_while_reading(sealed: bool) -> Result<Counts, String> {
    let link = |generation: usize| format!("{GLOB_DIR}/link-{generation}.pem");
    let target = |generation: usize| format!("{STAGING}/target-{generation}");
    make_glob_matches_while_reading(
        sealed,
        "symlink",
        |generation| {
            std::fs::write(target(generation), format!("target-{generation}\n"))?;
            std::os::unix::fs::symlink(target(generation), link(generation))
        },
        |generation| {
            let _ = std::fs::remove_file(link(generation));
            let _ = std::fs::remove_file(target(generation));
        },
        &format!("making symlinks in {GLOB_DIR}"),
    )
}

/// Runs `make` for each generation, 2 ms apart, while a reader (in a domain when `sealed`)
/// reads every `*.pem` it lists in the glob directory; then stops the reader and runs `clean`
/// for each generation. A failure to make a generation is reported, as `what`, after the
/// cleanup.
fn make_glob_matches_while_reading(
    sealed: bool,
    name: &str,
    make: impl Fn(usize) -> std::io::Result<()>,
    clean: impl Fn(usize),
    what: &str,
) -> Result<Counts, String> {
    let stop = stop_file(name);
    let _ = std::fs::remove_file(&stop);
    let reader = start(
        sealed,
        &format!("race-{name}-reader"),
        &["read-matching-loop", GLOB_DIR, ".pem", &stop],
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let made = (0..GENERATIONS).try_for_each(|generation| {
        make(generation)?;
        std::thread::sleep(Duration::from_millis(2));
        Ok::<_, std::io::Error>(())
    });
    std::fs::write(&stop, "").map_err(|err| err.to_string())?;
    let counts = finish(reader);
    let _ = std::fs::remove_file(&stop);
    (0..GENERATIONS).for_each(&clean);
    made.map_err(|err| format!("{what}: {err}"))?;
    counts
}

/// An administrator makes `appears/` (absent when the agent started), then 200 directories
/// `appears/d<n>/` each with its protected `token`, while a task reads every token it finds.
fn nest_while_reading(sealed: bool) -> Result<Counts, String> {
    let stop = stop_file("nest");
    let _ = std::fs::remove_file(&stop);
    let _ = std::fs::remove_dir_all(APPEARS);
    let reader = start(
        sealed,
        "race-nest-reader",
        &["read-nested-loop", APPEARS, "token", &stop],
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let made = (|| -> std::io::Result<()> {
        std::fs::create_dir(APPEARS)?;
        for generation in 0..GENERATIONS {
            let dir = format!("{APPEARS}/d{generation}");
            std::fs::create_dir(&dir)?;
            std::fs::write(format!("{dir}/token"), format!("token-{generation}\n"))?;
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    })();
    std::fs::write(&stop, "").map_err(|err| err.to_string())?;
    let counts = finish(reader);
    let _ = std::fs::remove_file(&stop);
    let _ = std::fs::remove_dir_all(APPEARS);
    made.map_err(|err| format!("making {APPEARS}: {err}"))?;
    counts
}

type Counts = std::collections::BTreeMap<String, u64>;

fn note(what: &str, counts: &Counts) {
    println!("BULKHEAD-NOTE race, {GENERATIONS} generations, {what}: {counts:?}");
}

fn stop_file(name: &str) -> String {
    format!("/tmp/bulkhead-race-{name}-{}", std::process::id())
}

/// Starts the helper with `args`, sealed into a fresh domain or not.
fn start(sealed: bool, label: &str, args: &[&str]) -> Result<Child, String> {
    let mut cmd = if sealed {
        let mut cmd = Command::new("bulkhead");
        cmd.args(["exec", "--label", label, "--", &exe()]);
        cmd
    } else {
        Command::new(exe())
    };
    cmd.arg("helper")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|err| format!("starting the reader: {err}"))
}

/// Waits for the reader and parses its `key=value` line.
fn finish(mut child: Child) -> Result<Counts, String> {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .map_err(|err| err.to_string())?;
    let status = child.wait().map_err(|err| err.to_string())?;
    if !status.success() {
        return Err(format!("reader exited {status}: {line}"));
    }
    line.split_whitespace()
        .map(|pair| {
            let (key, value) = pair.split_once('=').ok_or(format!("bad count {pair}"))?;
            Ok((
                key.to_owned(),
                value.parse().map_err(|_| format!("bad count {pair}"))?,
            ))
        })
        .collect()
}

fn replace_while_reading(sealed: bool) -> Result<Counts, String> {
    let stop = stop_file("replace");
    let _ = std::fs::remove_file(&stop);
    let reader = start(sealed, "race-reader", &["read-loop", RACED, &stop])?;
    // Give the reader time to start looping (bulkhead exec and the seal come first).
    std::thread::sleep(Duration::from_millis(300));
    let tmp = format!("{RACED}.tmp");
    let replaced = (|| -> std::io::Result<()> {
        for generation in 0..GENERATIONS {
            std::fs::write(&tmp, format!("generation-{generation}\n"))?;
            std::fs::rename(&tmp, RACED)?;
            // Let the reader get a turn on the two emulated CPUs.
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    })();
    std::fs::write(&stop, "").map_err(|err| err.to_string())?;
    let counts = finish(reader);
    let _ = std::fs::remove_file(&stop);
    replaced.map_err(|err| format!("replacing {RACED}: {err}"))?;
    counts
}

fn move_while_linked(sealed: bool) -> Result<Counts, String> {
    let stop = stop_file("move");
    let links = format!(
        "/srv/bulkhead-test/links-{}",
        if sealed { "domain" } else { "outside" }
    );
    let _ = std::fs::remove_file(&stop);
    let _ = std::fs::remove_dir_all(&links);
    let reader = start(
        sealed,
        "race-linker",
        &["link-then-read", STAGING, &links, &stop],
    )?;
    let moved = (|| -> Result<(), String> {
        for generation in 0..GENERATIONS {
            let staged = format!("{STAGING}/F-{generation}");
            std::fs::write(&staged, format!("moved-{generation}\n")).map_err(|e| e.to_string())?;
            // Wait (briefly) for the reader's link, so most files are linked before they move.
            let deadline = Instant::now() + Duration::from_millis(200);
            while std::fs::metadata(&staged).map_or(1, |m| m.nlink()) < 2
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::fs::rename(&staged, format!("{KEYS_DIR}/moved-{generation}"))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })();
    std::fs::write(&stop, "").map_err(|err| err.to_string())?;
    let counts = finish(reader);
    let _ = std::fs::remove_file(&stop);
    let _ = std::fs::remove_dir_all(&links);
    for generation in 0..GENERATIONS {
        let _ = std::fs::remove_file(format!("{KEYS_DIR}/moved-{generation}"));
    }
    moved?;
    counts
}
