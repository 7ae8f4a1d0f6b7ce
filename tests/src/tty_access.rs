//! Terminal requests that act on other processes: TIOCSTI (typing into a terminal's input),
//! TIOCLINUX (virtual-console requests, among them pasting), TIOCSPGRP (taking the
//! foreground), TIOCSETD (the line discipline), TIOCSIG (a pty master signalling the
//! foreground group) and the console keyboard requests (KDSKBMODE standing for them). A task
//! in a domain is refused them on any terminal; here the helper uses a pseudo-terminal of its
//! own, made its controlling terminal, which the kernel alone would let it act on.
//!
//! `Denied` is EPERM. Console requests on a pseudo-terminal are not console requests, and
//! TIOCSIG is given a signal the pty layer does not send, so from outside any domain they
//! reach the tty layer and fail with ENOTTY or EINVAL: that counts as `Allowed` (they got past
//! the hook). TIOCSPGRP and TIOCSETD set what is already set.

use std::ffi::CStr;

use crate::access::Outcome;

pub const OPS: [&str; 6] = [
    "tiocsti",
    "tioclinux",
    "tiocspgrp",
    "tiocsetd",
    "tiocsig",
    "kdskbmode",
];

/// `_IOW('T', 0x36, int)`.
const TIOCSIG: libc::c_ulong = 0x4004_5436;
const KDSKBMODE: libc::c_ulong = 0x4b45;
/// `K_XLATE`, the usual keyboard mode.
const K_XLATE: libc::c_int = 1;
/// The one line discipline every terminal starts with.
const N_TTY: libc::c_int = 0;

/// Where the kernel lets TIOCSTI through without CAP_SYS_ADMIN (6.2+; absent on 6.1, which
/// always does).
pub const LEGACY_TIOCSTI: &str = "/proc/sys/dev/tty/legacy_tiocsti";

fn open_pty() -> Result<(i32, String), String> {
    // SAFETY: plain libc calls; ptsname's buffer is copied at once.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        if master < 0 || libc::grantpt(master) != 0 || libc::unlockpt(master) != 0 {
            return Err(format!("pty: {}", std::io::Error::last_os_error()));
        }
        let name = libc::ptsname(master);
        if name.is_null() {
            return Err("ptsname failed".into());
        }
        Ok((master, CStr::from_ptr(name).to_string_lossy().into_owned()))
    }
}

/// Whether `byte` comes out of the pty master (the terminal's echo of its input).
fn echoed(master: i32, byte: u8) -> bool {
    let mut pollfd = libc::pollfd {
        fd: master,
        events: libc::POLLIN,
        revents: 0,
    };
    let mut buf = [0u8; 64];
    // SAFETY: one pollfd and a buffer of the length passed.
    unsafe {
        if libc::poll(&mut pollfd, 1, 500) != 1 {
            return false;
        }
        let n = libc::read(master, buf.as_mut_ptr().cast(), buf.len());
        n > 0 && buf[..n as usize].contains(&byte)
    }
}

pub fn attempt(op: &str) -> Outcome {
    let (master, slave) = match open_pty() {
        Ok(pty) => pty,
        Err(err) => return Outcome::Error(err),
    };
    // The request runs in a child that starts a session, so the pty becomes its controlling
    // terminal when it opens the slave.
    // SAFETY: the child only makes system calls and exits.
    match unsafe { libc::fork() } {
        0 => unsafe {
            if libc::setsid() < 0 {
                libc::_exit(21);
            }
            let path = crate::access::cstring(&slave);
            let fd = libc::open(path.as_ptr(), libc::O_RDWR);
            if fd < 0 {
                libc::_exit(22);
            }
            // The kernel's own checks let a task act on its controlling terminal: it must be
            // that, or a refusal could be the kernel's.
            if libc::tcgetsid(fd) != libc::getsid(0) {
                libc::_exit(23);
            }
            let byte: libc::c_char = b'x' as libc::c_char;
            let own_group: libc::pid_t = libc::getpgrp();
            let rc = match op {
                "tiocsti" => libc::ioctl(fd, libc::TIOCSTI, &byte),
                "tiocspgrp" => libc::ioctl(fd, libc::TIOCSPGRP, &own_group),
                "tiocsetd" => libc::ioctl(fd, libc::TIOCSETD, &N_TTY),
                // SIGUSR1: not one the pty layer sends, so nothing is signalled.
                "tiocsig" => libc::ioctl(master, TIOCSIG, libc::SIGUSR1 as libc::c_ulong),
                "kdskbmode" => libc::ioctl(fd, KDSKBMODE, K_XLATE as libc::c_ulong),
                _ => libc::ioctl(fd, libc::TIOCLINUX, &byte),
            };
            let errno = *libc::__errno_location();
            // TIOCSTI's byte goes into the terminal's input, whose echo comes out of the
            // master: what the ioctl's result says must be what the terminal shows.
            if op == "tiocsti" && echoed(master, b'x') != (rc == 0) {
                libc::_exit(if rc == 0 { 24 } else { 25 });
            }
            let past_the_hook = matches!(op, "tioclinux" | "tiocsig" | "kdskbmode");
            libc::_exit(match (rc, errno) {
                (0, _) => 0,
                (_, libc::EPERM) => 10,
                (_, libc::ENOTTY | libc::EINVAL) if past_the_hook => 0,
                (_, errno) => 30 + errno.min(99),
            })
        },
        -1 => Outcome::Error(format!("fork: {}", std::io::Error::last_os_error())),
        child => {
            let mut status = 0;
            // SAFETY: plain waitpid.
            unsafe { libc::waitpid(child, &mut status, 0) };
            // SAFETY: our own fd.
            unsafe { libc::close(master) };
            match libc::WEXITSTATUS(status) {
                0 => Outcome::Allowed,
                10 => Outcome::Denied,
                23 => Outcome::Error(format!("{op}: the pty is not the controlling terminal")),
                24 => Outcome::Error("TIOCSTI allowed, but no byte reached the terminal".into()),
                25 => Outcome::Error("TIOCSTI refused, but its byte reached the terminal".into()),
                code => Outcome::Error(format!("{op}: child exit {code} (30+ is 30 + errno)")),
            }
        }
    }
}
