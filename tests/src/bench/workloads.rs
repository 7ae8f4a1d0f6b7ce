//! The microbenchmarks' side that runs in the measured process: `helper bench-micro ITERS`
//! runs each system-call workload for ITERS operations and prints one line per workload,
//! `NAME NS_PER_OP CALIBRATION_NS`. The same code runs outside any domain and sealed into one
//! (through `bulkhead exec`), so the only difference between the two is the domain.
//!
//! Each workload runs in batches, each preceded by a fixed CPU loop, timed: the fastest batch
//! is the sample, and a guest slowed by other load on the host shows in its calibration, which
//! the analysis uses to drop samples taken at reduced speed.

use std::{
    ffi::CString,
    hint::black_box,
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

/// Where the driver builds the file tree the workloads walk (see [`prepare_tree`]).
pub const TREE: &str = "/tmp/bulkhead-bench";
/// Eleven directories deep, as a path walk on a real host often is.
pub const DEEP_DIRS: usize = 11;
/// Entries of the directory `getdents` lists.
pub const LISTED_ENTRIES: usize = 100;

/// Each workload: its name, one operation, and how many of ITERS it runs (fork and exec
/// are much slower than a stat).
struct Workload {
    name: &'static str,
    divisor: u32,
    op: fn(&Paths),
}

struct Paths {
    deep: CString,
    file: CString,
    listed: std::path::PathBuf,
    scratch: CString,
    true_bin: CString,
    held: std::fs::File,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "stat-11-dirs",
        divisor: 1,
        op: |p| {
            // SAFETY: a valid C string and a stat buffer on the stack.
            let mut st = unsafe { std::mem::zeroed::<libc::stat>() };
            unsafe { libc::stat(p.deep.as_ptr(), &mut st) };
        },
    },
    Workload {
        name: "open-close",
        divisor: 1,
        op: |p| {
            // SAFETY: open of a valid C string; the descriptor is closed at once.
            let fd = unsafe { libc::open(p.file.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            if fd >= 0 {
                unsafe { libc::close(fd) };
            }
        },
    },
    Workload {
        name: "create-unlink",
        divisor: 2,
        op: |p| {
            // SAFETY: as above, then unlink of the same valid C string.
            let fd = unsafe {
                libc::open(
                    p.scratch.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o600,
                )
            };
            if fd >= 0 {
                unsafe { libc::close(fd) };
            }
            unsafe { libc::unlink(p.scratch.as_ptr()) };
        },
    },
    Workload {
        name: "getdents-100",
        divisor: 20,
        op: |p| {
            if let Ok(entries) = std::fs::read_dir(&p.listed) {
                black_box(entries.count());
            }
        },
    },
    Workload {
        name: "proc-self-read",
        divisor: 4,
        op: |_| {
            black_box(std::fs::read("/proc/self/stat").ok());
        },
    },
    Workload {
        name: "fcntl",
        divisor: 1,
        op: |p| {
            // SAFETY: F_GETFL on a descriptor this process holds.
            black_box(unsafe { libc::fcntl(p.held.as_raw_fd(), libc::F_GETFL) });
        },
    },
    Workload {
        name: "kill-self-0",
        divisor: 1,
        op: |_| {
            // SAFETY: signal 0 to ourselves only checks permission.
            black_box(unsafe { libc::kill(libc::getpid(), 0) });
        },
    },
    Workload {
        // Inside a domain every one is refused (init is outside it): the cost of a refusal
        // flood, audit record included. Outside, the same call is allowed.
        name: "kill-init-0",
        divisor: 1,
        op: |_| {
            // SAFETY: signal 0 only checks permission.
            black_box(unsafe { libc::kill(1, 0) });
        },
    },
    Workload {
        name: "fork-wait",
        divisor: 50,
        op: |_| {
            // SAFETY: the child calls only _exit.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                unsafe { libc::_exit(0) };
            }
            wait(pid);
        },
    },
    Workload {
        name: "fork-exec-wait",
        divisor: 100,
        op: |p| {
            let argv = [p.true_bin.as_ptr(), std::ptr::null()];
            let envp = [std::ptr::null()];
            // SAFETY: the child calls only execve and _exit, async-signal-safe.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                unsafe {
                    libc::execve(p.true_bin.as_ptr(), argv.as_ptr(), envp.as_ptr());
                    libc::_exit(127);
                }
            }
            wait(pid);
        },
    },
];

/// The names of the microbenchmarks, in the order they run.
pub fn names() -> impl Iterator<Item = &'static str> {
    WORKLOADS.iter().map(|w| w.name)
}

fn wait(pid: i32) {
    if pid > 0 {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
    }
}

/// A fixed amount of CPU work with no system call: its time is the guest's speed.
pub fn calibrate() -> Duration {
    let start = Instant::now();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..200_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = black_box(x);
    }
    black_box(x);
    start.elapsed()
}

/// The file tree the workloads use: a file eleven directories deep, a file to open, a
/// directory of LISTED_ENTRIES files. Built once per boot by the driver, outside any domain.
pub fn prepare_tree() -> Result<(), String> {
    let root = std::path::Path::new(TREE);
    let deep = (1..=DEEP_DIRS).fold(root.to_path_buf(), |path, n| path.join(format!("d{n}")));
    std::fs::create_dir_all(&deep).map_err(|err| format!("{}: {err}", deep.display()))?;
    std::fs::write(deep.join("file"), b"deep").map_err(|err| err.to_string())?;
    std::fs::write(root.join("file"), b"shallow").map_err(|err| err.to_string())?;
    let listed = root.join("listed");
    std::fs::create_dir_all(&listed).map_err(|err| err.to_string())?;
    for n in 0..LISTED_ENTRIES {
        std::fs::write(listed.join(format!("entry-{n}")), b"x").map_err(|err| err.to_string())?;
    }
    // Created and removed by create-unlink; the domain may write here (tmpfs, not protected).
    std::fs::create_dir_all(root.join("scratch")).map_err(|err| err.to_string())?;
    Ok(())
}

fn paths() -> Result<Paths, String> {
    let root = std::path::Path::new(TREE);
    let deep = (1..=DEEP_DIRS)
        .fold(root.to_path_buf(), |path, n| path.join(format!("d{n}")))
        .join("file");
    let c = |path: &std::path::Path| {
        CString::new(path.as_os_str().as_encoded_bytes()).map_err(|err| err.to_string())
    };
    Ok(Paths {
        deep: c(&deep)?,
        file: c(&root.join("file"))?,
        listed: root.join("listed"),
        scratch: c(&root
            .join("scratch")
            .join(format!("f-{}", std::process::id())))?,
        true_bin: c(std::path::Path::new("/bin/true"))?,
        held: std::fs::File::open(root.join("file")).map_err(|err| err.to_string())?,
    })
}

/// Batches each sample is split into; the fastest counts. Interference from outside the guest
/// only ever slows a batch, so the fastest batch is the closest to the guest's own speed.
pub const BATCHES: u32 = 5;

/// Runs `op` `count` times in [`BATCHES`] batches, each after a calibration; returns the
/// fastest batch's time per operation and that batch's calibration, in ns.
pub fn fastest_batch(count: u32, mut op: impl FnMut()) -> (f64, u128) {
    let per_batch = (count / BATCHES).max(1);
    // One untimed operation first: caches and lazy kernel state are not what is measured.
    op();
    (0..BATCHES)
        .map(|_| {
            let calibration = calibrate();
            let start = Instant::now();
            for _ in 0..per_batch {
                op();
            }
            (
                start.elapsed().as_nanos() as f64 / f64::from(per_batch),
                calibration.as_nanos(),
            )
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .expect("at least one batch")
}

/// `helper bench-micro ITERS`: every workload, each in batches.
pub fn run_micro(iterations: &str) -> Result<(), String> {
    let iterations: u32 = iterations
        .parse()
        .map_err(|err| format!("iterations: {err}"))?;
    let paths = paths()?;
    for workload in WORKLOADS {
        let count = (iterations / workload.divisor).max(BATCHES);
        let (per_op, calibration) = fastest_batch(count, || (workload.op)(&paths));
        println!("{} {per_op:.1} {calibration}", workload.name);
    }
    Ok(())
}
