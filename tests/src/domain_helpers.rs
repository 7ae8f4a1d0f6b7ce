//! Helper processes for the domain-lifecycle tests: tasks that outlive their sealed parent,
//! forks that fail after the kernel has labelled the child, and a fork churn across agent
//! restarts. Each prints its domain first, so the suite can find its audit records.

use std::{io::Write, time::Duration};

use crate::helper::{EXIT_OK, EXIT_WRONG, own_domain, wait_for};

fn say(line: &str) {
    println!("{line}");
    std::io::stdout().flush().expect("stdout");
}

/// Leaves one task of this domain running after this process exits: a double-forked
/// grandchild (reparented away from the supervisor) that runs and joins a few threads, then
/// waits for `go_file`. Prints "DOMAIN GRANDCHILD_PID".
pub fn linger(go_file: &str) -> i32 {
    let domain = own_domain();
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the middle child only forks and exits; the grandchild runs ordinary code, which
    // is fine as this process is single-threaded.
    match unsafe { libc::fork() } {
        0 => {
            if unsafe { libc::fork() } != 0 {
                unsafe { libc::_exit(0) };
            }
            unsafe { libc::close(fds[0]) };
            let pid = std::process::id().to_string();
            unsafe { libc::write(fds[1], pid.as_ptr().cast(), pid.len()) };
            unsafe { libc::close(fds[1]) };
            // Let go of the suite's output pipes, or the suite would wait for this task's exit
            // to see the end of the helper's output.
            if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
                let null = std::os::fd::AsRawFd::as_raw_fd(&null);
                unsafe {
                    libc::dup2(null, 1);
                    libc::dup2(null, 2);
                }
            }
            // Threads are tasks too: each is counted when it starts and uncounted when it
            // exits, and none of that may end the domain.
            let threads: Vec<_> = (0..4)
                .map(|_| std::thread::spawn(|| std::thread::sleep(Duration::from_millis(20))))
                .collect();
            for thread in threads {
                let _ = thread.join();
            }
            wait_for(go_file);
            unsafe { libc::_exit(0) };
        }
        -1 => return EXIT_WRONG,
        middle => {
            unsafe {
                libc::close(fds[1]);
                libc::waitpid(middle, std::ptr::null_mut(), 0);
            }
            let mut buf = [0u8; 16];
            // SAFETY: reading into a local buffer.
            let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
            let grandchild = String::from_utf8_lossy(&buf[..n.max(0) as usize]).into_owned();
            say(&format!("{domain} {grandchild}"));
        }
    }
    EXIT_OK
}

/// Run sealed in a cgroup that allows one task (itself), so every fork is refused by the pids
/// controller after `task_alloc` has already labelled the child. Prints
/// "DOMAIN FAILED_FORKS".
pub fn fork_fail() -> i32 {
    let domain = own_domain();
    let mut failed = 0;
    for _ in 0..20 {
        // SAFETY: a child that is created after all exits at once.
        match unsafe { libc::fork() } {
            0 => unsafe { libc::_exit(0) },
            -1 => failed += 1,
            child => unsafe {
                libc::waitpid(child, std::ptr::null_mut(), 0);
            },
        }
    }
    say(&format!("{domain} {failed}"));
    EXIT_OK
}

/// Forks short-lived children (and now and then a thread) until `stop_file` appears, so
/// tasks of this domain start and exit while the agent's programs are replaced. Prints
/// "DOMAIN" at once and the number of forks at the end.
pub fn fork_churn(stop_file: &str) -> i32 {
    say(&own_domain());
    let mut forks = 0u64;
    while !std::path::Path::new(stop_file).exists() {
        // SAFETY: the child exits at once.
        match unsafe { libc::fork() } {
            0 => unsafe { libc::_exit(0) },
            -1 => {}
            child => {
                unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
                forks += 1;
            }
        }
        if forks.is_multiple_of(16) {
            // Not thread::spawn, which panics when the clone is refused: on 6.1 the kernel
            // refuses a domain's fork or thread with EAGAIN while it cannot read its creator's
            // label (README, known limits), and the churn must go on through that.
            if let Ok(thread) = std::thread::Builder::new().spawn(|| ()) {
                let _ = thread.join();
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    say(&format!("forks={forks}"));
    EXIT_OK
}

/// Starts `threads` threads that wait for a signal and then all exit at the same moment,
/// twice, so many tasks of this domain pass the exit tracepoint together; then exits. Prints
/// "DOMAIN" and then how many threads could not be started (on 6.1 a fork is refused with
/// EAGAIN while its creator's label cannot be read; the count still has to come out right).
pub fn exit_storm(threads: &str) -> i32 {
    use std::sync::{Arc, Condvar, Mutex};
    let Ok(threads) = threads.parse::<usize>() else {
        return EXIT_WRONG;
    };
    say(&own_domain());
    let mut refused = 0;
    for round in 0..2 {
        // Blocked, not polling: hundreds of waiting threads must not starve the guest.
        let go = Arc::new((Mutex::new(false), Condvar::new()));
        let running: Vec<_> = (0..threads)
            .filter_map(|_| {
                let go = go.clone();
                let spawned = std::thread::Builder::new().spawn(move || {
                    let (released, wake) = &*go;
                    let mut released = released.lock().unwrap_or_else(|e| e.into_inner());
                    while !*released {
                        released = wake.wait(released).unwrap_or_else(|e| e.into_inner());
                    }
                });
                if let Err(err) = &spawned {
                    if refused == 0 {
                        eprintln!("exit storm round {round}: thread refused: {err}");
                    }
                    refused += 1;
                }
                spawned.ok()
            })
            .collect();
        *go.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
        go.1.notify_all();
        for thread in running {
            let _ = thread.join();
        }
    }
    say(&format!("refused={refused}"));
    EXIT_OK
}
