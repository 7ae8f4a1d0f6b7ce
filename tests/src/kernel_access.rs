//! What root inside a domain could use to undo the domain or act on the whole node: bpf(),
//! lockdown-guarded devices, kernel modules, mounts, sysctls, sysfs and cgroup files,
//! fanotify listeners that judge or watch other processes' opens, and inotify watches on
//! protected files.
//!
//! `Denied` is EPERM. For module loading the outside control feeds the kernel a blob that is
//! not a module: getting past the LSM check shows as ENOEXEC, which counts as `Allowed`.

use std::{fs, io};

use crate::{access::Outcome, fixtures, refusal_records::Names};

pub const OPS: [&str; 16] = [
    "bpf",
    "dev-mem",
    "kcore",
    "init-module",
    "mount",
    "umount",
    "fsopen-tmpfs",
    "fsopen-debugfs",
    "open-tree-clone",
    "sysctl-write",
    "sysfs-write",
    "cgroup-mkdir",
    "cgroup-freeze",
    "fanotify-permission",
    "fanotify-mount",
    "inotify-protected",
];

/// A cgroup the suite makes outside any domain (tests/src/scenarios_kernel.rs).
pub const PROBE_CGROUP: &str = "/sys/fs/cgroup/bulkhead-probe";

/// The audit records that show `op` refused: the capability checks come first on most of
/// these paths (may_mount, may_init_module, open_kcore, fanotify_init), so a `capable` record
/// is the usual one; the writes to kernel files are judged by `inode_permission` on the file
/// of its filesystem.
pub fn recorded_as(op: &str) -> Vec<(&'static str, Names)> {
    let operation = |hooks: &[&'static str]| hooks.iter().map(|h| (*h, Names::Operation)).collect();
    match op {
        "bpf" => operation(&["bpf", "capable"]),
        // /dev/mem is a character device no domain may open (devices.rs), before the
        // driver's own capability and lockdown checks; /proc/kcore is a procfs file.
        "dev-mem" => vec![("inode_permission", Names::Device)],
        "kcore" => operation(&["capable", "locked_down"]),
        "init-module" => operation(&["capable", "kernel_load_data"]),
        "mount" => operation(&["capable", "sb_mount"]),
        "umount" => operation(&["capable", "sb_umount"]),
        // may_mount() asks CAP_SYS_ADMIN in the mount namespace's user namespace.
        "fsopen-tmpfs" | "fsopen-debugfs" | "open-tree-clone" => operation(&["capable"]),
        "sysctl-write" => vec![("inode_permission", Names::FsObject("proc"))],
        "sysfs-write" => vec![("inode_permission", Names::FsObject("sysfs"))],
        "cgroup-mkdir" | "cgroup-freeze" => vec![("inode_permission", Names::FsObject("cgroup2"))],
        "fanotify-permission" | "fanotify-mount" => operation(&["capable", "path_notify"]),
        "inotify-protected" => vec![
            ("inode_permission", Names::File),
            ("path_notify", Names::File),
        ],
        _ => Vec::new(),
    }
}

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub fn attempt(op: &str) -> Outcome {
    let result = match op {
        "bpf" => bpf_map_create(),
        "dev-mem" => fs::File::open("/dev/mem").map(drop),
        "kcore" => fs::File::open("/proc/kcore").map(drop),
        "init-module" => init_module_garbage(),
        "mount" => mount_tmpfs(),
        "umount" => nix::mount::umount(fixtures::SCRATCH_MOUNT).map_err(io::Error::from),
        // The new mount API: a filesystem context, then (outside a domain) a detached mount of
        // it, which a descriptor reaches without ever being attached anywhere.
        "fsopen-tmpfs" => new_detached_mount(c"tmpfs"),
        "fsopen-debugfs" => new_detached_mount(c"debugfs"),
        // A detached copy of a mount tree (bind mount without attaching it).
        "open-tree-clone" => open_tree_clone(),
        "sysctl-write" => write_back("/proc/sys/vm/swappiness"),
        "sysfs-write" => write_back("/sys/kernel/mm/ksm/sleep_millisecs"),
        "cgroup-mkdir" => {
            let dir = format!("{PROBE_CGROUP}/child-{}", std::process::id());
            fs::create_dir(&dir).and_then(|()| fs::remove_dir(&dir))
        }
        // Unfreezing a cgroup that is not frozen: the write passes every check, changes nothing.
        "cgroup-freeze" => fs::write(format!("{PROBE_CGROUP}/cgroup.freeze"), "0"),
        // A listener that decides whether other processes' opens of /tmp go on.
        "fanotify-permission" => fanotify_mark(
            libc::FAN_CLASS_CONTENT,
            libc::FAN_MARK_ADD,
            libc::FAN_OPEN_PERM,
        ),
        // A listener that sees every open on the mount of /tmp.
        "fanotify-mount" => fanotify_mark(
            libc::FAN_CLASS_NOTIF,
            libc::FAN_MARK_ADD | libc::FAN_MARK_MOUNT,
            libc::FAN_OPEN,
        ),
        "inotify-protected" => inotify_watch(fixtures::SECRET),
        other => return Outcome::Error(format!("unknown kernel op {other}")),
    };
    match result {
        Ok(()) => Outcome::Allowed,
        Err(err) if err.raw_os_error() == Some(libc::EPERM) => Outcome::Denied,
        Err(err) => Outcome::Error(format!("{op}: {err}")),
    }
}

/// fanotify_init with `class`, then one mark of `mask` on /tmp (added and dropped with the
/// group's descriptor).
fn fanotify_mark(class: libc::c_uint, flags: libc::c_uint, mask: u64) -> io::Result<()> {
    // SAFETY: plain system calls; the path is a NUL-terminated literal.
    unsafe {
        let fd =
            check(libc::fanotify_init(class | libc::FAN_CLOEXEC, libc::O_RDONLY as u32).into())?;
        let marked = check(
            libc::fanotify_mark(fd as i32, flags, mask, libc::AT_FDCWD, c"/tmp".as_ptr()).into(),
        );
        libc::close(fd as i32);
        marked.map(drop)
    }
}

/// An inotify watch on `path`.
fn inotify_watch(path: &str) -> io::Result<()> {
    let path = crate::access::cstring(path);
    // SAFETY: plain system calls on a descriptor of our own.
    unsafe {
        let fd = check(libc::inotify_init1(libc::IN_CLOEXEC).into())?;
        let watched =
            check(libc::inotify_add_watch(fd as i32, path.as_ptr(), libc::IN_OPEN).into());
        libc::close(fd as i32);
        watched.map(drop)
    }
}

/// Writes back the value a kernel file holds, so an allowed write changes nothing.
fn write_back(path: &str) -> io::Result<()> {
    let value = fs::read_to_string(path)?;
    fs::write(path, value.trim())
}

/// BPF_MAP_CREATE of a one-entry array: the simplest bpf() command that does something.
fn bpf_map_create() -> io::Result<()> {
    #[repr(C)]
    struct MapCreate {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        rest: [u8; 112],
    }
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_ARRAY: u32 = 2;
    let attr = MapCreate {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: 8,
        max_entries: 1,
        rest: [0; 112],
    };
    // SAFETY: a zero-padded bpf_attr of the size passed.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            std::ptr::from_ref(&attr),
            std::mem::size_of::<MapCreate>(),
        )
    })?;
    // SAFETY: closing the fd we were just given.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

fn init_module_garbage() -> io::Result<()> {
    let blob = [0u8; 64];
    // SAFETY: a valid buffer of the given length and an empty C string for the parameters.
    match check(unsafe {
        libc::syscall(
            libc::SYS_init_module,
            blob.as_ptr(),
            blob.len(),
            c"".as_ptr(),
        )
    }) {
        Ok(_) => Err(io::Error::other(
            "the kernel accepted a blob of zeros as a module",
        )),
        Err(err) if err.raw_os_error() == Some(libc::ENOEXEC) => Ok(()),
        Err(err) => Err(err),
    }
}

/// fsopen + fsconfig(CREATE) + fsmount of `fs`; the mount descriptor is closed at once.
fn new_detached_mount(fs: &std::ffi::CStr) -> io::Result<()> {
    const FSCONFIG_CMD_CREATE: libc::c_long = 6;
    // SAFETY: plain system calls on a NUL-terminated name and our own descriptors.
    unsafe {
        let context = check(libc::syscall(libc::SYS_fsopen, fs.as_ptr(), 0))? as i32;
        let created = check(libc::syscall(
            libc::SYS_fsconfig,
            context,
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        ))
        .and_then(|_| check(libc::syscall(libc::SYS_fsmount, context, 0, 0)));
        libc::close(context);
        libc::close(created? as i32);
    }
    Ok(())
}

/// open_tree(OPEN_TREE_CLONE) of /tmp; the detached copy is closed at once.
fn open_tree_clone() -> io::Result<()> {
    const OPEN_TREE_CLONE: libc::c_long = 1;
    // SAFETY: a NUL-terminated path; the returned descriptor is ours.
    let fd = check(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c"/tmp".as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_long,
        )
    })?;
    // SAFETY: closing our own descriptor.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

fn mount_tmpfs() -> io::Result<()> {
    let target = format!("/tmp/bulkhead-mount-{}", std::process::id());
    fs::create_dir_all(&target)?;
    let result = nix::mount::mount(
        Some("tmpfs"),
        target.as_str(),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(io::Error::from);
    if result.is_ok() {
        let _ = nix::mount::umount(target.as_str());
    }
    let _ = fs::remove_dir(&target);
    result
}
