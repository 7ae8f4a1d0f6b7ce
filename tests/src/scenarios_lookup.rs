//! A failed label lookup is not "outside every domain" (issue: kernel matrix, item 4).
//!
//! On Linux 6.1 `bpf_task_storage_get` returns nothing, even for a task that has a label,
//! while the CPU's task-storage busy counter is held, for instance by another task preempted
//! inside a task-storage map operation on the same CPU. Here a task in a domain probes the
//! supervisor with signal 0 in a loop, pinned to CPU 0, while the suite (outside any domain,
//! also on CPU 0) hammers lookups on the agent's task-storage map; the guest runs with
//! `preempt=full`, so the hammer is preempted inside its busy window again and again. Not one
//! probe may get through, and on 6.1 the refusals the programs could not decide must show up
//! in the audit log (the race was really run); on later kernels LSM programs get a lookup
//! without the busy counter, so there is nothing to race and the case says so.

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use crate::{
    harness::{Suite, skip},
    scenarios_audit::{log_len, records_since},
};

const TASK_DOMAIN_PIN: &str = "/sys/fs/bpf/bulkhead/maps/TASK_DOMAIN";
const RACE: Duration = Duration::from_secs(8);

pub fn add(suite: &mut Suite<'_>) {
    suite.add(
        "lookup:busy-task-storage-never-frees-a-domain-task",
        busy_lookup_race,
    );
}

/// Pins the calling thread to one CPU.
pub fn pin_to_cpu(cpu: usize) -> Result<(), String> {
    // SAFETY: a zeroed cpu_set_t filled by the libc macros, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "sched_setaffinity: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Does this kernel give LSM programs the task-storage lookup that fails while busy? Only
/// before 6.2 (`bpf_task_storage_get` without the `_recur` split).
fn lookup_can_fail() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let (major, minor) = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    (major, minor) < (6, 2)
}

fn busy_lookup_race() -> Result<(), String> {
    let stop = "/tmp/bulkhead-busy-stop";
    let _ = std::fs::remove_file(stop);
    let offset = log_len();
    let sup = std::process::id().to_string();
    let attacker = Command::new("bulkhead")
        .args(["exec", "--label", "busy-lookup", "--"])
        .arg(crate::scenarios::exe())
        .args(["helper", "busy-attacker", &sup, stop])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| err.to_string())?;
    let lookups = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let hammered = std::thread::scope(|scope| {
        let hammer = scope.spawn(|| hammer_lookups(&done, &lookups));
        std::thread::sleep(RACE);
        done.store(true, Ordering::Relaxed);
        hammer
            .join()
            .unwrap_or_else(|_| Err("hammer panicked".into()))
    });
    std::fs::write(stop, "").map_err(|err| err.to_string())?;
    let output = attacker.wait_with_output().map_err(|err| err.to_string())?;
    hammered?;
    let summary = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    // Let the agent write what the ring holds.
    std::thread::sleep(Duration::from_secs(2));
    let undecidable = records_since(offset)
        .iter()
        .filter(|r| r["type"] == "access" && r["actor"]["domain"] == "undecidable")
        .count();
    let lookups = lookups.load(Ordering::Relaxed);
    println!(
        "BULKHEAD-NOTE busy task-storage race: {summary} hammer-cycles={lookups} \
         undecidable-refusals={undecidable}"
    );
    if !output.status.success() {
        return Err(format!(
            "{summary}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    if !lookup_can_fail() {
        return skip(
            "LSM programs get a task-storage lookup without the busy counter on this kernel (6.2+); no probe got through",
        );
    }
    if undecidable == 0 {
        return skip(
            "the race was not reached in this run (no undecidable refusal); no probe got through",
        );
    }
    Ok(())
}

/// Creates and deletes a label on a throwaway child (outside any domain, `sleep`) over and over,
/// on CPU 0: each update and delete holds the CPU's task-storage busy counter across an
/// allocation or an unlink, and with preempt=full the thread can be preempted inside. The
/// label it writes says "exited", so the domain counting ignores it, and the child is killed
/// afterwards.
fn hammer_lookups(done: &AtomicBool, count: &AtomicU64) -> Result<(), String> {
    pin_to_cpu(0)?;
    let map = bpf_obj_get(TASK_DOMAIN_PIN)?;
    let mut child = Command::new("sleep")
        .arg("600")
        .spawn()
        .map_err(|err| format!("spawning the scratch child: {err}"))?;
    // SAFETY: pidfd_open of our child; the fd is owned below.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id(), 0) };
    if pidfd < 0 {
        let _ = child.kill();
        return Err(format!("pidfd_open: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd we own.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    let key: i32 = pidfd.as_raw_fd();
    // TaskLabel { domain, life: LIFE_EXITED }.
    let value: [u64; 2] = [
        0x7eed_0000_0000_0001,
        bulkhead_common::lifecycle::LIFE_EXITED,
    ];
    #[repr(C)]
    struct ElemAttr {
        map_fd: u32,
        pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    let attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        pad: 0,
        key: std::ptr::from_ref(&key) as u64,
        value: value.as_ptr() as u64,
        flags: 0,
    };
    let started = Instant::now();
    while !done.load(Ordering::Relaxed) && started.elapsed() < RACE * 2 {
        // BPF_MAP_UPDATE_ELEM (2), then BPF_MAP_DELETE_ELEM (3).
        for command in [2, 3] {
            // SAFETY: the attr and what it points to live for the call.
            unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    command,
                    std::ptr::from_ref(&attr),
                    std::mem::size_of::<ElemAttr>(),
                )
            };
        }
        count.fetch_add(1, Ordering::Relaxed);
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}

/// BPF_OBJ_GET (7): an fd for a pinned object.
fn bpf_obj_get(path: &str) -> Result<OwnedFd, String> {
    let path = std::ffi::CString::new(path).map_err(|err| err.to_string())?;
    #[repr(C)]
    struct ObjAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let attr = ObjAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: the attr and the path live for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            7,
            std::ptr::from_ref(&attr),
            std::mem::size_of::<ObjAttr>(),
        )
    };
    if fd < 0 {
        return Err(format!(
            "BPF_OBJ_GET {}: {}",
            path.to_string_lossy(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The sealed side: probes the supervisor with signal 0 on CPU 0 until `stop_file` appears.
pub fn busy_attacker(sup: &str, stop_file: &str) -> i32 {
    use crate::{
        access::Outcome,
        helper::{EXIT_OK, EXIT_WRONG},
    };
    if let Err(err) = pin_to_cpu(0) {
        eprintln!("{err}");
        return EXIT_WRONG;
    }
    let sup: i32 = sup.parse().expect("pid");
    let (mut attempts, mut allowed, mut errors) = (0u64, 0u64, 0u64);
    while !std::path::Path::new(stop_file).exists() {
        attempts += 1;
        match crate::signal_access::attempt("kill-0", sup) {
            Outcome::Denied => {}
            Outcome::Allowed => allowed += 1,
            Outcome::Error(err) => {
                if errors == 0 {
                    eprintln!("{err}");
                }
                errors += 1;
            }
        }
    }
    println!("attempts={attempts} allowed={allowed} errors={errors}");
    if attempts > 0 && allowed == 0 && errors == 0 {
        EXIT_OK
    } else {
        EXIT_WRONG
    }
}
