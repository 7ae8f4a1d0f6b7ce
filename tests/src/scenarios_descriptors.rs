//! Descriptors of a protected file in a domain's hands (issue: protected files with no
//! window): inherited from the supervisor and used every way a descriptor is read, received
//! over a Unix socket, and handed out with a fanotify event by a listener outside the domain.
//! Each is refused in a domain with its audit record, and gives the protected contents from
//! outside any domain.

use std::{fs::File, os::fd::AsRawFd};

use crate::{
    access::Outcome,
    descriptor_access::HELD_OPS,
    fixtures::SECRET,
    harness::Suite,
    refusal_records::{Names, label_for, refused_and_recorded},
    scenarios::{expect, run_helper},
};

pub fn add(suite: &mut Suite<'_>) {
    for op in HELD_OPS {
        let hook = match op {
            "mmap" => "mmap_file",
            "ioctl-getflags" => "file_ioctl",
            "lease" => "file_fcntl",
            _ => "file_permission",
        };
        let case = format!("deny:descriptor-inherited-{op}:in-domain");
        suite.add(case.clone(), move || {
            let held = inheritable(File::open(SECRET).map_err(|e| format!("{SECRET}: {e}"))?)?;
            let fd = held.as_raw_fd().to_string();
            refused_and_recorded(
                &label_for(&case),
                &["held-fd", &fd, op],
                &[],
                &[(hook, Names::File)],
            )
        });
        suite.add(
            format!("control-outside:descriptor-inherited-{op}"),
            move || {
                let held = inheritable(File::open(SECRET).map_err(|e| format!("{SECRET}: {e}"))?)?;
                let fd = held.as_raw_fd().to_string();
                expect(
                    run_helper(false, "", &["held-fd", &fd, op], &[]),
                    Outcome::Allowed,
                )
            },
        );
    }
    suite.add("deny:descriptor-received:in-domain", || {
        let socket = socket_holding_secret()?;
        let fd = socket.as_raw_fd().to_string();
        refused_and_recorded(
            &label_for("deny:descriptor-received:in-domain"),
            &["received-fd", &fd],
            &[],
            &[("file_receive", Names::File)],
        )
    });
    suite.add("control-outside:descriptor-received", || {
        let socket = socket_holding_secret()?;
        let fd = socket.as_raw_fd().to_string();
        expect(
            run_helper(false, "", &["received-fd", &fd], &[]),
            Outcome::Allowed,
        )
    });
    suite.add("deny:descriptor-fanotify-event:in-domain", || {
        let group = fanotify_group_with_event()?;
        let fd = group.as_raw_fd().to_string();
        refused_and_recorded(
            &label_for("deny:descriptor-fanotify-event:in-domain"),
            &["fanotify-event", &fd],
            &[],
            &[("file_open", Names::File)],
        )
    });
    // A walk-less open gets the whole inode verdict, not only the protected-file one: another
    // task's /proc file, handed out with a fanotify event.
    suite.add(
        "deny:descriptor-fanotify-event-other-task-proc:in-domain",
        || {
            let group = fanotify_group_with_event_on(FANOTIFIED_OTHER_TASK_FILE)?;
            let fd = group.as_raw_fd().to_string();
            expect(
                run_helper(true, "fanotify-proc", &["fanotify-event-opened", &fd], &[]),
                Outcome::Denied,
            )
        },
    );
    suite.add(
        "control-outside:descriptor-fanotify-event-other-task-proc",
        || {
            let group = fanotify_group_with_event_on(FANOTIFIED_OTHER_TASK_FILE)?;
            let fd = group.as_raw_fd().to_string();
            expect(
                run_helper(false, "", &["fanotify-event-opened", &fd], &[]),
                Outcome::Allowed,
            )
        },
    );
    suite.add("control-outside:descriptor-fanotify-event", || {
        let group = fanotify_group_with_event()?;
        let fd = group.as_raw_fd().to_string();
        expect(
            run_helper(false, "", &["fanotify-event", &fd], &[]),
            Outcome::Allowed,
        )
    });
}

/// `file` with close-on-exec cleared, so the helper (and `bulkhead exec` before it) inherits it.
fn inheritable(file: File) -> Result<File, String> {
    // SAFETY: fcntl on our own descriptor.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFD, 0) } != 0 {
        return Err(format!("F_SETFD: {}", std::io::Error::last_os_error()));
    }
    Ok(file)
}

/// One end of a Unix socket pair (inheritable) whose other end has sent a descriptor of the
/// protected file, opened here outside any domain.
fn socket_holding_secret() -> Result<File, String> {
    use std::os::fd::FromRawFd;
    let secret = File::open(SECRET).map_err(|e| format!("{SECRET}: {e}"))?;
    let mut pair = [0; 2];
    // SAFETY: a valid array of two ints; the message buffers outlive sendmsg.
    unsafe {
        if libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, pair.as_mut_ptr()) != 0 {
            return Err(format!("socketpair: {}", std::io::Error::last_os_error()));
        }
        let receiver = File::from_raw_fd(pair[0]);
        let sender = File::from_raw_fd(pair[1]);
        let mut byte = *b"x";
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let space = libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) as usize;
        let mut control = vec![0u8; space];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), secret.as_raw_fd());
        if libc::sendmsg(sender.as_raw_fd(), &msg, 0) != 1 {
            return Err(format!("sendmsg: {}", std::io::Error::last_os_error()));
        }
        inheritable(receiver)
    }
}

/// Another task's `/proc/<pid>` file (init's, outside any domain), which no domain may open.
/// (Not a device: the guest's kernels queue no open event for character devices.)
const FANOTIFIED_OTHER_TASK_FILE: &str = "/proc/1/status";

/// A fanotify group made here, outside any domain, watching opens of the protected file, with
/// one open already queued (inheritable).
fn fanotify_group_with_event() -> Result<File, String> {
    fanotify_group_with_event_on(SECRET)
}

/// The same for any file. The group does not block: a kernel that queued no event makes the
/// helper's read fail, not hang the suite.
fn fanotify_group_with_event_on(target: &str) -> Result<File, String> {
    use std::os::fd::FromRawFd;
    let path = crate::access::cstring(target);
    // SAFETY: plain system calls; the path is NUL-terminated.
    let group = unsafe {
        let fd = libc::fanotify_init(
            libc::FAN_CLASS_NOTIF | libc::FAN_NONBLOCK,
            libc::O_RDONLY as u32,
        );
        if fd < 0 {
            return Err(format!(
                "fanotify_init: {}",
                std::io::Error::last_os_error()
            ));
        }
        let group = File::from_raw_fd(fd);
        if libc::fanotify_mark(
            fd,
            libc::FAN_MARK_ADD,
            libc::FAN_OPEN,
            libc::AT_FDCWD,
            path.as_ptr(),
        ) != 0
        {
            return Err(format!(
                "fanotify_mark: {}",
                std::io::Error::last_os_error()
            ));
        }
        group
    };
    File::open(target).map_err(|e| format!("{target}: {e}"))?;
    event_queued(&group, target)?;
    inheritable(group)
}

/// Errs unless the group has an event to read, so a missing event is named as such.
fn event_queued(group: &File, target: &str) -> Result<(), String> {
    let mut poll = libc::pollfd {
        fd: group.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, as stated.
    let ready = unsafe { libc::poll(&mut poll, 1, 2000) };
    if ready != 1 {
        return Err(format!("no fanotify event queued for opening {target}"));
    }
    Ok(())
}
