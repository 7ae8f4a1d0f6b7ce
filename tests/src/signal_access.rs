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
    if signal_pending(pid, SIGIO_SIGNAL) != Ok(false) {
        return Outcome::Error("target has the signal pending before the attempt".into());
    }
    let mut fds = [0; 2];
    // SAFETY: valid array of two ints; fcntl and write on the fds we just created.
    let setup = unsafe {
        libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) == 0
            && libc::fcntl(fds[0], libc::F_SETOWN, pid) == 0
            && libc::fcntl(fds[0], F_SETSIG, SIGIO_SIGNAL) == 0
            && libc::fcntl(fds[0], libc::F_SETFL, libc::O_ASYNC | libc::O_NONBLOCK) == 0
    };
    if !setup {
        return Outcome::Error(format!("sigio setup: {}", io::Error::last_os_error()));
    }
    // SAFETY: writing one byte from a static buffer to our own socket.
    if unsafe { libc::write(fds[1], b"x".as_ptr().cast(), 1) } != 1 {
        return Outcome::Error(format!("sigio write: {}", io::Error::last_os_error()));
    }
    // Delivery happens inside write(); a short wait only guards against a slow reader of
    // /proc under emulation.
    std::thread::sleep(Duration::from_millis(50));
    let pending = signal_pending(pid, SIGIO_SIGNAL);
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    match pending {
        Ok(true) => Outcome::Allowed,
        Ok(false) => Outcome::Denied,
        Err(err) => Outcome::Error(err),
    }
}

/// Makes `pid` the owner of one end of a Unix stream pair and sends out-of-band data to it:
/// the kernel signals SIGURG to the owner (sk_send_sigurg), through the same owner check as
/// SIGIO but by another path (no F_SETSIG, no O_ASYNC).
fn sigurg(pid: i32) -> Outcome {
    if signal_pending(pid, libc::SIGURG) != Ok(false) {
        return Outcome::Error("target has SIGURG pending before the attempt".into());
    }
    let mut fds = [0; 2];
    // SAFETY: valid array of two ints; fcntl on the fd we just created.
    let setup = unsafe {
        libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) == 0
            && libc::fcntl(fds[0], libc::F_SETOWN, pid) == 0
    };
    if !setup {
        return Outcome::Error(format!("sigurg setup: {}", io::Error::last_os_error()));
    }
    // SAFETY: sending one byte from a static buffer on our own socket.
    if unsafe { libc::send(fds[1], b"!".as_ptr().cast(), 1, libc::MSG_OOB) } != 1 {
        return Outcome::Error(format!("sigurg send: {}", io::Error::last_os_error()));
    }
    std::thread::sleep(Duration::from_millis(50));
    let pending = signal_pending(pid, libc::SIGURG);
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    match pending {
        Ok(true) => Outcome::Allowed,
        Ok(false) => Outcome::Denied,
        Err(err) => Outcome::Error(err),
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
