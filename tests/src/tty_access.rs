//! Terminal requests that act on other processes: TIOCSTI (typing into a terminal's input)
//! and TIOCLINUX (virtual-console requests, among them pasting). A task in a domain is refused
//! both, on any terminal; here the helper uses a pseudo-terminal of its own, made its
//! controlling terminal, which the kernel alone would let it inject into.
//!
//! `Denied` is EPERM. TIOCLINUX on a pseudo-terminal is not a console request, so from outside
//! any domain it reaches the tty layer and fails with ENOTTY or EINVAL: that counts as
//! `Allowed` (it got past the hook).

use std::ffi::CStr;

use crate::access::Outcome;

pub const OPS: [&str; 2] = ["tiocsti", "tioclinux"];

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
            let byte: libc::c_char = b'x' as libc::c_char;
            let rc = match op {
                "tiocsti" => libc::ioctl(fd, libc::TIOCSTI, &byte),
                _ => libc::ioctl(fd, libc::TIOCLINUX, &byte),
            };
            let errno = *libc::__errno_location();
            libc::_exit(match (rc, errno) {
                (0, _) => 0,
                (_, libc::EPERM) => 10,
                (_, libc::ENOTTY | libc::EINVAL) if op == "tioclinux" => 0,
                (_, errno) => 30 + errno.min(99),
            })
        },
        -1 => Outcome::Error(format!("fork: {}", std::io::Error::last_os_error())),
        child => {
            let mut status = 0;
            // SAFETY: plain waitpid; the master is closed afterwards.
            unsafe {
                libc::waitpid(child, &mut status, 0);
                libc::close(master);
            }
            match libc::WEXITSTATUS(status) {
                0 => Outcome::Allowed,
                10 => Outcome::Denied,
                code => Outcome::Error(format!("{op}: child exit {code} (30+ is 30 + errno)")),
            }
        }
    }
}
