//! Signals a task might send across its domain's boundary.
//!
//! Direct signals report the LSM's refusal as EPERM. SIGIO/SIGURG through a file owner is sent
//! later by the kernel and a refusal is silent, so that attempt looks at the target instead:
//! the target blocks the signal, and a delivered signal shows as pending in its
//! /proc/<pid>/status (readable by anyone; not a ptrace-guarded file).

use std::{io, time::Duration};

use crate::access::Outcome;

/// Harmless if delivered: SIGCONT to a running process does nothing.
const PROBE_SIGNAL: i32 = libc::SIGCONT;
/// What `sigio` asks the kernel to send (F_SETSIG); `sigio-target` blocks it.
pub const SIGIO_SIGNAL: i32 = libc::SIGUSR2;

/// fcntl command (uapi asm-generic/fcntl.h); not exported by the libc crate.
const F_SETSIG: libc::c_int = 10;

pub const DIRECT_OPS: [&str; 5] = ["kill-0", "kill", "tgkill", "sigqueue", "pidfd-send-signal"];

fn check(ret: libc::c_long) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn attempt(op: &str, pid: i32) -> Outcome {
    let result = match op {
        // SAFETY (all arms): plain syscalls on integers and a zeroed siginfo.
        "kill-0" => check(unsafe { libc::kill(pid, 0) }.into()),
        "kill" => check(unsafe { libc::kill(pid, PROBE_SIGNAL) }.into()),
        "tgkill" => check(unsafe { libc::syscall(libc::SYS_tgkill, pid, pid, PROBE_SIGNAL) }),
        "sigqueue" => {
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            info.si_signo = PROBE_SIGNAL;
            info.si_code = libc::SI_QUEUE;
            check(unsafe {
                libc::syscall(
                    libc::SYS_rt_sigqueueinfo,
                    pid,
                    PROBE_SIGNAL,
                    std::ptr::from_mut(&mut info),
                )
            })
        }
        "pidfd-send-signal" => {
            let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
            if pidfd < 0 {
                return Outcome::Error(format!("pidfd_open: {}", io::Error::last_os_error()));
            }
            let result = check(unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    pidfd,
                    PROBE_SIGNAL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            });
            unsafe { libc::close(pidfd as i32) };
            result
        }
        "sigio" => return sigio(pid),
        "sigurg" => return sigurg(pid),
        other => return Outcome::Error(format!("unknown signal op {other}")),
    };
    match result {
        Ok(()) => Outcome::Allowed,
        Err(err) if err.raw_os_error() == Some(libc::EPERM) => Outcome::Denied,
        Err(err) => Outcome::Error(format!("{op}: {err}")),
    }
}

/// Makes `pid` the owner of a socket, asks for SIGIO_SIGNAL on I/O, and causes I/O.
fn sigio(pid: i32) -> Outcome {
    owner_signal_attempt(pid, SIGIO_SIGNAL, |fds| {
        // SAFETY: fcntl and write on the fds of our own socket pair.
        unsafe {
            if libc::fcntl(fds[0], libc::F_SETOWN, pid) != 0
                || libc::fcntl(fds[0], F_SETSIG, SIGIO_SIGNAL) != 0
                || libc::fcntl(fds[0], libc::F_SETFL, libc::O_ASYNC | libc::O_NONBLOCK) != 0
            {
                return Err(format!("sigio setup: {}", io::Error::last_os_error()));
            }
            if libc::write(fds[1], b"x".as_ptr().cast(), 1) != 1 {
                return Err(format!("sigio write: {}", io::Error::last_os_error()));
            }
        }
        Ok(())
    })
}

/// Makes `pid` the owner of one end of a Unix stream pair and sends out-of-band data to it:
/// the kernel signals SIGURG to the owner (sk_send_sigurg), through the same owner check as
/// SIGIO but by another path (no F_SETSIG, no O_ASYNC).
fn sigurg(pid: i32) -> Outcome {
    owner_signal_attempt(pid, libc::SIGURG, |fds| {
        // SAFETY: fcntl and send on the fds of our own socket pair.
        unsafe {
            if libc::fcntl(fds[0], libc::F_SETOWN, pid) != 0 {
                return Err(format!("sigurg setup: {}", io::Error::last_os_error()));
            }
            if libc::send(fds[1], b"!".as_ptr().cast(), 1, libc::MSG_OOB) != 1 {
                return Err(format!("sigurg send: {}", io::Error::last_os_error()));
            }
        }
        Ok(())
    })
}

/// Makes a Unix stream pair, lets `trigger` make `pid` its owner and cause the I/O that signals
/// it, and reports whether `signal` arrived. Where this process may not see `pid`'s pending
/// signals (from a domain, a process outside it: its `/proc/<pid>` is refused), the attempt is
/// made all the same and reported `Allowed`; the suite then judges delivery from outside.
fn owner_signal_attempt(
    pid: i32,
    signal: i32,
    trigger: impl FnOnce(&[i32; 2]) -> Result<(), String>,
) -> Outcome {
    let visible = match pending_if_visible(pid, signal) {
        Ok(Some(true)) => {
            return Outcome::Error(format!("{pid} has {signal} pending before the attempt"));
        }
        Ok(visible) => visible.is_some(),
        Err(err) => return Outcome::Error(err),
    };
    let mut fds = [0; 2];
    // SAFETY: a valid array of two ints.
    if unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) } != 0 {
        return Outcome::Error(format!("socketpair: {}", io::Error::last_os_error()));
    }
    let triggered = trigger(&fds);
    // Delivery happens inside the write; a short wait only guards against a slow reader of
    // /proc under emulation.
    std::thread::sleep(Duration::from_millis(50));
    let pending = if visible {
        pending_if_visible(pid, signal)
    } else {
        Ok(None)
    };
    // SAFETY: closing our own fds.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    if let Err(err) = triggered {
        return Outcome::Error(err);
    }
    match pending {
        Ok(Some(true)) | Ok(None) => Outcome::Allowed,
        Ok(Some(false)) => Outcome::Denied,
        Err(err) => Outcome::Error(err),
    }
}

/// [`signal_pending`], or `None` when this process is refused `pid`'s status.
fn pending_if_visible(pid: i32, signal: i32) -> Result<Option<bool>, String> {
    let path = format!("/proc/{pid}/status");
    match std::fs::metadata(&path).and_then(|_| std::fs::File::open(&path)) {
        Err(err) if err.raw_os_error() == Some(libc::EPERM) => Ok(None),
        _ => signal_pending(pid, signal).map(Some),
    }
}

/// The signal an owner-signal op makes the kernel send.
pub fn owner_signal(op: &str) -> i32 {
    if op == "sigurg" {
        libc::SIGURG
    } else {
        SIGIO_SIGNAL
    }
}

/// Is `signal` pending for `pid` (thread or process-wide)?
pub fn signal_pending(pid: i32, signal: i32) -> Result<bool, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|err| format!("reading /proc/{pid}/status: {err}"))?;
    let bit = 1u64 << (signal - 1);
    let mut found = false;
    for line in status.lines() {
        if let Some(mask) = line
            .strip_prefix("SigPnd:")
            .or_else(|| line.strip_prefix("ShdPnd:"))
        {
            let mask = u64::from_str_radix(mask.trim(), 16)
                .map_err(|err| format!("bad mask {mask:?}: {err}"))?;
            found |= mask & bit != 0;
        }
    }
    Ok(found)
}

/// Blocks SIGIO_SIGNAL and SIGURG so a delivered one stays pending and visible.
pub fn block_sigio_signal() {
    // SAFETY: a zeroed sigset, filled by the libc calls.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, SIGIO_SIGNAL);
        libc::sigaddset(&mut set, libc::SIGURG);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}
