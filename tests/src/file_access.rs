//! Attempts on protected files, each the way a task would make them.
//!
//! `Denied` means the call failed with EPERM, what bulkhead's hooks return; `Allowed` means it
//! did what it was asked (for reads: returned the file's bytes). The suite runs as root, so no
//! other permission check can produce EPERM here, and anything else is an `Error`.

use std::{
    ffi::CString,
    fs,
    io::{self, Read},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::fs::{OpenOptionsExt, PermissionsExt},
    },
    path::Path,
};

use crate::access::Outcome;

fn outcome(what: &str, result: io::Result<()>) -> Outcome {
    match result {
        Ok(()) => Outcome::Allowed,
        Err(err) if err.raw_os_error() == Some(libc::EPERM) => Outcome::Denied,
        Err(err) => Outcome::Error(format!("{what}: {err}")),
    }
}

fn cstr(path: &str) -> CString {
    CString::new(path).expect("no NUL in fixture paths")
}

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn read_fd(fd: OwnedFd) -> io::Result<()> {
    let mut content = Vec::new();
    fs::File::from(fd).read_to_end(&mut content)?;
    if content.is_empty() {
        return Err(io::Error::other("read no bytes from a non-empty file"));
    }
    Ok(())
}

/// Runs file operation `op` with `args`; see the match for the list.
pub fn attempt(op: &str, args: &[&str]) -> Outcome {
    let result = match (op, args) {
        ("read", [path]) => fs::read(path).and_then(|bytes| {
            if bytes.is_empty() {
                Err(io::Error::other("empty"))
            } else {
                Ok(())
            }
        }),
        ("write", [path]) => fs::OpenOptions::new().append(true).open(path).map(drop),
        ("exec", [path]) => exec_in_child(path),
        ("openat2", [path]) => openat2(path),
        ("openat-relative", [dir, name]) => openat_relative(dir, name),
        ("opath-reopen", [path]) => match opath_reopen(path) {
            Ok(result) => result,
            Err(err) => return Outcome::Error(format!("O_PATH open itself failed: {err}")),
        },
        ("list", [dir]) => {
            fs::read_dir(dir).and_then(|mut entries| entries.try_for_each(|entry| entry.map(drop)))
        }
        ("create", [dir]) => {
            fs::File::create(Path::new(dir).join(format!("new-{}", std::process::id()))).map(drop)
        }
        ("unlink", [path]) => fs::remove_file(path),
        ("rename", [path]) => fs::rename(path, format!("{path}.moved")),
        // bpffs refuses names with a dot, so the pin directory tests name the target.
        ("rename-to", [from, to]) => fs::rename(from, to),
        ("rename-over", [path]) => {
            let tmp = format!("{path}.{}.tmp", std::process::id());
            fs::write(&tmp, "replacement\n").and_then(|()| {
                let result = fs::rename(&tmp, path);
                let _ = fs::remove_file(&tmp);
                result
            })
        }
        ("link", [path]) => fs::hard_link(path, format!("{path}.link")),
        ("chmod", [path]) => fs::set_permissions(path, fs::Permissions::from_mode(0o600)),
        ("chown", [path]) => std::os::unix::fs::chown(path, Some(1), Some(1)),
        ("truncate", [path]) => {
            // SAFETY: valid C string.
            check(unsafe { libc::truncate(cstr(path).as_ptr(), 0) }.into()).map(drop)
        }
        ("setxattr", [path]) => {
            let value = b"1";
            // SAFETY: valid C strings and a value buffer of the given length.
            check(
                unsafe {
                    libc::setxattr(
                        cstr(path).as_ptr(),
                        c"trusted.bulkhead-test".as_ptr(),
                        value.as_ptr().cast(),
                        value.len(),
                        0,
                    )
                }
                .into(),
            )
            .map(drop)
        }
        ("create-at", [path]) => fs::File::create(path).and_then(|_| fs::remove_file(path)),
        ("mkdir-at", [path]) => fs::create_dir(path).and_then(|()| fs::remove_dir(path)),
        ("mkfifo-at", [path]) => {
            // SAFETY: valid C string.
            check(unsafe { libc::mkfifo(cstr(path).as_ptr(), 0o600) }.into())
                .and_then(|_| fs::remove_file(path))
        }
        ("symlink-at", [path]) => {
            std::os::unix::fs::symlink("/tmp", path).and_then(|()| fs::remove_file(path))
        }
        ("link-own-to", [path]) => with_own_file(path, |own| {
            fs::hard_link(own, path).and_then(|()| fs::remove_file(path))
        }),
        ("rename-own-to", [path]) => with_own_file(path, |own| {
            fs::rename(own, path).and_then(|()| fs::remove_file(path))
        }),
        ("rename-own-dir-to", [path]) => {
            let own = format!("{path}.own-{}", std::process::id());
            fs::create_dir(&own).and_then(|()| {
                let result = fs::rename(&own, path).and_then(|()| fs::remove_dir(path));
                let _ = fs::remove_dir(&own);
                result
            })
        }
        _ => return Outcome::Error(format!("unknown file op {op} {args:?}")),
    };
    outcome(&format!("{op} {args:?}"), result)
}

/// Runs `op` with a file the task makes itself beside `path` (removed afterwards if left).
fn with_own_file(path: &str, op: impl FnOnce(&str) -> io::Result<()>) -> io::Result<()> {
    let own = format!("{path}.own-{}", std::process::id());
    fs::write(&own, "the task's own\n")?;
    let result = op(&own);
    let _ = fs::remove_file(&own);
    result
}

/// execve in a child; the child reports execve's errno as its exit code.
fn exec_in_child(path: &str) -> io::Result<()> {
    let path = cstr(path);
    let argv = [path.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null()];
    // SAFETY: the child only calls execve and _exit.
    let child = unsafe { libc::fork() };
    if child == 0 {
        unsafe {
            libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(*libc::__errno_location());
        }
    }
    let mut status = 0;
    // SAFETY: valid out pointer.
    unsafe { libc::waitpid(child, &mut status, 0) };
    match libc::WEXITSTATUS(status) {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn openat2(path: &str) -> io::Result<()> {
    const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: valid path and `open_how` of the size passed.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            cstr(path).as_ptr(),
            std::ptr::from_ref(&how),
            std::mem::size_of::<OpenHow>(),
        )
    })?;
    // SAFETY: a fresh fd we own.
    read_fd(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn openat_relative(dir: &str, name: &str) -> io::Result<()> {
    let dir = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(dir)?;
    // SAFETY: valid dir fd and C string.
    let fd = check(
        unsafe {
            libc::openat(
                dir.as_raw_fd(),
                cstr(name).as_ptr(),
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        }
        .into(),
    )?;
    // SAFETY: a fresh fd we own.
    read_fd(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// An O_PATH descriptor carries no access; reopening it through /proc/self/fd is a real open
/// of the inode and must be checked like one.
fn opath_reopen(path: &str) -> io::Result<io::Result<()>> {
    let handle = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(path)?;
    let reopened = format!("/proc/self/fd/{}", handle.as_raw_fd());
    Ok(fs::File::open(reopened).map(drop))
}
