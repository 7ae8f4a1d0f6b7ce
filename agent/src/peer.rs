//! Who is on the other end of a Unix socket, as the kernel says, never as the request says.
//!
//! At accept time we take the peer's credentials (SO_PEERCRED) and a pidfd for the peer
//! process. A pidfd names one process instance for its whole life, so every later question
//! (its domain, its thread count, is it still alive) is about that instance even if its PID
//! number is recycled.
//!
//! Residual window (documented in the README): on kernels without SO_PEERPIDFD (before 6.5)
//! the pidfd is opened from the PID number, so a peer that exits between connect() and our
//! accept() could have its PID recycled in that window. Kernels with SO_PEERPIDFD get the pidfd
//! of the exact process that connected.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

/// getsockopt(SOL_SOCKET, SO_PEERPIDFD), Linux 6.5+ (include/uapi/asm-generic/socket.h).
const SO_PEERPIDFD: libc::c_int = 77;

#[derive(Debug)]
pub struct Peer {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
    pidfd: OwnedFd,
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("reading the peer's credentials (SO_PEERCRED): {0}")]
    Credentials(nix::Error),
    #[error("the peer has no PID in this PID namespace")]
    NoPid,
    #[error("opening a pidfd for peer pid {pid}: {source}")]
    Pidfd { pid: i32, source: io::Error },
    #[error("the peer process has exited")]
    Gone,
    #[error("reading /proc/{pid}: {source}")]
    Proc { pid: i32, source: procfs::ProcError },
    #[error("process {pid} is not a child of the caller (its parent is {parent})")]
    NotChild { pid: i32, parent: i32 },
    #[error("no such process: {0}")]
    NoSuchProcess(i32),
}

impl Peer {
    /// Identifies the process at the other end of `socket`.
    pub fn of_socket(socket: BorrowedFd<'_>) -> Result<Self, PeerError> {
        let creds = getsockopt(&socket, PeerCredentials).map_err(PeerError::Credentials)?;
        let pid = creds.pid();
        if pid <= 0 {
            return Err(PeerError::NoPid);
        }
        let pidfd = match peer_pidfd(socket) {
            Some(pidfd) => pidfd,
            None => pidfd_open(pid).map_err(|source| PeerError::Pidfd { pid, source })?,
        };
        let peer = Self {
            pid,
            uid: creds.uid(),
            gid: creds.gid(),
            pidfd,
        };
        peer.ensure_alive()?;
        Ok(peer)
    }

    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// True until the process exits.
    pub fn is_alive(&self) -> bool {
        pidfd_is_alive(self.pidfd.as_fd())
    }

    /// The live child `pid` of this peer, with its own pidfd.
    ///
    /// The parent is read from /proc and trusted only after both pidfds are confirmed alive:
    /// a live child's PID cannot have been reused, so the stat read was the child's; a live
    /// caller's PID neither, so the parent named there is the caller.
    pub fn child(&self, pid: i32) -> Result<Peer, PeerError> {
        if pid <= 0 {
            return Err(PeerError::NoSuchProcess(pid));
        }
        let pidfd = pidfd_open(pid).map_err(|source| match source.raw_os_error() {
            Some(libc::ESRCH) => PeerError::NoSuchProcess(pid),
            _ => PeerError::Pidfd { pid, source },
        })?;
        let proc_error = |source| PeerError::Proc { pid, source };
        let process = procfs::process::Process::new(pid).map_err(proc_error)?;
        let stat = process.stat().map_err(proc_error)?;
        let status = process.status().map_err(proc_error)?;
        let child = Peer {
            pid,
            uid: status.euid,
            gid: status.egid,
            pidfd,
        };
        child.ensure_alive()?;
        if stat.ppid != self.pid {
            return Err(PeerError::NotChild {
                pid,
                parent: stat.ppid,
            });
        }
        self.ensure_alive()?;
        Ok(child)
    }

    /// The peer's start time in clock ticks since boot, confirmed against the pidfd.
    pub fn start_time(&self) -> Result<u64, PeerError> {
        Ok(self.confirmed_stat()?.starttime)
    }

    /// The PID of this process's parent, read while this process was alive (so it is this
    /// process's parent, not a PID successor's).
    pub fn parent_pid(&self) -> Result<i32, PeerError> {
        Ok(self.confirmed_stat()?.ppid)
    }

    /// /proc/<pid>/stat, confirmed against the pidfd: if the process is still alive after the
    /// read, its PID cannot have been reused, so the stat is this process's.
    fn confirmed_stat(&self) -> Result<procfs::process::Stat, PeerError> {
        let stat = procfs::process::Process::new(self.pid)
            .and_then(|process| process.stat())
            .map_err(|source| PeerError::Proc {
                pid: self.pid,
                source,
            })?;
        self.ensure_alive()?;
        Ok(stat)
    }

    /// A second pidfd for the same process, for holding beyond this connection.
    pub fn duplicate_pidfd(&self) -> io::Result<OwnedFd> {
        self.pidfd.try_clone()
    }

    pub fn ensure_alive(&self) -> Result<(), PeerError> {
        if self.is_alive() {
            Ok(())
        } else {
            Err(PeerError::Gone)
        }
    }

    /// How many threads the peer has, read from the right process (see `confirmed_stat`).
    pub fn thread_count(&self) -> Result<u64, PeerError> {
        Ok(self.confirmed_stat()?.num_threads.max(0) as u64)
    }
}

/// True until the pidfd's process exits: a pidfd polls readable once it has.
pub fn pidfd_is_alive(pidfd: BorrowedFd<'_>) -> bool {
    let mut fds = [libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: one valid pollfd, zero timeout.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
    ready == 0
}

fn peer_pidfd(socket: BorrowedFd<'_>) -> Option<OwnedFd> {
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `fd` and `len` are valid for writing an int-sized option.
    let ret = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            std::ptr::from_mut(&mut fd).cast(),
            &mut len,
        )
    };
    // SAFETY: on success the kernel installed a new fd that we now own.
    (ret == 0 && fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; on success it returns a new fd that we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a freshly opened descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn identifies_the_connected_process() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let peer = Peer::of_socket(ours.as_fd()).unwrap();
        assert_eq!(peer.pid as u32, std::process::id());
        assert_eq!(peer.uid, nix::unistd::getuid().as_raw());
        assert!(peer.is_alive());
        assert!(peer.thread_count().unwrap() >= 1);
    }

    #[test]
    fn children_are_told_from_strangers() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let me = Peer::of_socket(ours.as_fd()).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let found = me.child(child.id() as i32).unwrap();
        assert_eq!(found.pid as u32, child.id());
        assert!(found.start_time().unwrap() >= me.start_time().unwrap());
        // Control: my parent is not my child, and PID 1 is nobody's child here.
        let parent = nix::unistd::getppid().as_raw();
        assert!(matches!(me.child(parent), Err(PeerError::NotChild { .. })));
        assert!(matches!(me.child(1), Err(PeerError::NotChild { .. })));
        assert!(matches!(me.child(0), Err(PeerError::NoSuchProcess(0))));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(matches!(
            me.child(child.id() as i32),
            Err(PeerError::NoSuchProcess(_) | PeerError::Gone)
        ));
    }

    #[test]
    fn a_dead_peer_is_reported_gone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pidfd = pidfd_open(child.id() as i32).unwrap();
        child.wait().unwrap();
        let peer = Peer {
            pid: child.id() as i32,
            uid: 0,
            gid: 0,
            pidfd,
        };
        assert!(!peer.is_alive());
        assert!(matches!(
            peer.thread_count(),
            Err(PeerError::Gone | PeerError::Proc { .. })
        ));
    }
}
