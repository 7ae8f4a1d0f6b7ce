//! What the LSM programs cost a process outside every domain, and one inside: the kernel's own
//! per-program counters (BPF_ENABLE_STATS) around the same round of system calls, run once from
//! outside and once from a domain, in the same boot. TCG time is emulated, so the note gives
//! each program's mean run time next to the mean time of the round it ran in, never absolute
//! figures to compare across machines. Not a timed test: it fails only if the counters cannot
//! be read or did not move (a harness that measures nothing).

use std::{collections::BTreeMap, process::Command, time::Duration};

use aya::programs::loaded_programs;

use crate::scenarios::exe;

/// Program name (as the kernel keeps it, 15 characters) -> (runs, time running).
type Counters = BTreeMap<String, (u64, Duration)>;

/// The counters of every loaded LSM program.
fn lsm_counters() -> Result<Counters, String> {
    const BPF_PROG_TYPE_LSM: u32 = 29;
    let mut counters = Counters::new();
    for info in loaded_programs() {
        let info = info.map_err(|err| format!("reading loaded programs: {err}"))?;
        if info.program_type() as u32 != BPF_PROG_TYPE_LSM {
            continue;
        }
        let name = info.name_as_str().unwrap_or("?").to_owned();
        let entry = counters.entry(name).or_insert((0, Duration::ZERO));
        entry.0 += info.run_count();
        entry.1 += info.run_time();
    }
    Ok(counters)
}

/// Runs `rounds` rounds of the helper's system calls, sealed or not, and returns the
/// programs' counters that moved and the helper's mean time per round.
fn measure(sealed: bool, rounds: &str) -> Result<(Counters, Duration), String> {
    let before = lsm_counters()?;
    let mut cmd = if sealed {
        let mut cmd = Command::new("bulkhead");
        cmd.args(["exec", "--label", "bench", "--", &exe()]);
        cmd
    } else {
        Command::new(exe())
    };
    let output = cmd
        .args(["helper", "syscall-rounds", rounds])
        .output()
        .map_err(|err| format!("syscall-rounds: {err}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let after = lsm_counters()?;
    let per_round: u64 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .map_err(|err| format!("syscall-rounds printed no time: {err}"))?;
    let moved = after
        .into_iter()
        .filter_map(|(name, (runs, time))| {
            let (runs0, time0) = before.get(&name).copied().unwrap_or_default();
            (runs > runs0).then(|| (name, (runs - runs0, time.saturating_sub(time0))))
        })
        .collect();
    Ok((moved, Duration::from_nanos(per_round)))
}

fn describe(counters: &Counters) -> String {
    let mut busiest: Vec<_> = counters.iter().collect();
    busiest.sort_by_key(|(_, (runs, _))| std::cmp::Reverse(*runs));
    busiest
        .into_iter()
        .take(6)
        .map(|(name, (runs, time))| {
            format!(
                "{name} {runs} runs, mean {} ns",
                time.as_nanos() / u128::from((*runs).max(1))
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub fn hook_cost() -> Result<(), String> {
    let _stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .map_err(|err| format!("enabling BPF run-time statistics: {err}"))?;
    let (outside, outside_round) = measure(false, "2000")?;
    let (inside, inside_round) = measure(true, "2000")?;
    for (phase, counters) in [("outside", &outside), ("inside", &inside)] {
        if !counters
            .keys()
            .any(|name| name.starts_with("inode_permissi"))
        {
            return Err(format!(
                "inode_permission never ran {phase} a domain: {counters:?}"
            ));
        }
    }
    println!(
        "BULKHEAD-NOTE hook cost, outside any domain (one round of stat, open, read, close, \
         socket, getpriority: mean {} ns): {}",
        outside_round.as_nanos(),
        describe(&outside)
    );
    println!(
        "BULKHEAD-NOTE hook cost, inside a domain (same round: mean {} ns, {:.2}x outside): {}",
        inside_round.as_nanos(),
        inside_round.as_secs_f64() / outside_round.as_secs_f64().max(1e-9),
        describe(&inside)
    );
    Ok(())
}

/// The helper's side: `rounds` rounds of common system calls; prints the mean ns per round.
pub fn syscall_rounds(rounds: &str) -> Result<(), String> {
    use std::io::Read;
    let rounds: u32 = rounds.parse().map_err(|err| format!("rounds: {err}"))?;
    let start = std::time::Instant::now();
    let mut buf = [0u8; 64];
    for _ in 0..rounds {
        let _ = std::fs::metadata("/etc/hostname");
        if let Ok(mut file) = std::fs::File::open("/etc/hostname") {
            let _ = file.read(&mut buf);
        }
        // SAFETY: plain system calls; the socket is closed at once.
        unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            if fd >= 0 {
                libc::close(fd);
            }
            libc::getpriority(libc::PRIO_PROCESS, 0);
        }
    }
    println!("{}", start.elapsed().as_nanos() / u128::from(rounds.max(1)));
    Ok(())
}
