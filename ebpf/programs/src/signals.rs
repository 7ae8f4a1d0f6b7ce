//! SIGIO and SIGURG: signals the kernel sends on a task's behalf to the owner it set on a file.
//! See file_owner.rs for why the setter's domain is recorded.

use core::ffi::c_void;

use aya_ebpf::{bindings::task_struct, macros::lsm, programs::LsmContext};
use aya_log_ebpf::info;
use bulkhead_common::{NO_DOMAIN, UNDECIDABLE, audit::hook};

use crate::{
    ENOMEM,
    audit::refuse_task,
    descriptors::check_held_request,
    file_owner,
    hook_args::{hook_arg, verdict},
    kernel_layout::{file_key, fown_file_key},
    may_reach,
    task_domain::{current_domain, domain_of, restricted_actor},
};

// fcntl commands and ioctl requests that (may) set a file's owner; uapi values, stable ABI.
const F_SETFL: u32 = 4;
const F_SETOWN: u32 = 8;
const F_SETOWN_EX: u32 = 15;
const F_SETLEASE: u32 = 1024;
const F_NOTIFY: u32 = 1026;
const O_ASYNC: u64 = 0o20000;
const FIOSETOWN: u32 = 0x8901;
const SIOCSPGRP: u32 = 0x8902;
const FIOASYNC: u32 = 0x5452;

/// Reserves the file-owner record before a task in a domain sets an owner, so the setter is
/// always known when a signal is later sent (or the call fails).
#[inline(always)]
fn reserve_owner_record(ctx: &LsmContext, file: *const c_void, previous: i32) -> i32 {
    let domain = match restricted_actor(previous) {
        Ok(domain) => domain,
        Err(verdict) => return verdict,
    };
    let key = file_key(file);
    if key != 0 && file_owner::record(key, domain) {
        return 0;
    }
    info!(
        ctx,
        "bulkhead: file owner not recorded for domain {}, refusing", domain
    );
    -ENOMEM
}

#[lsm(hook = "file_fcntl")]
pub fn file_fcntl(ctx: LsmContext) -> i32 {
    let cmd = hook_arg!(ctx, FileFcntlCmd) as u32;
    let arg = hook_arg!(ctx, FileFcntlArg);
    let previous = verdict!(ctx, FileFcntlVerdict);
    let file = hook_arg!(ctx, FileFcntlFile) as *const c_void;
    if matches!(cmd, F_SETLEASE | F_NOTIFY)
        && let Some(verdict) = check_held_request(hook::FILE_FCNTL, cmd, file, previous)
    {
        return verdict;
    }
    let sets_owner = matches!(cmd, F_SETOWN | F_SETOWN_EX | F_SETLEASE | F_NOTIFY)
        || (cmd == F_SETFL && arg & O_ASYNC != 0);
    if !sets_owner {
        return previous;
    }
    reserve_owner_record(&ctx, file, previous)
}

/// The ioctl side of the above (called by ioctls.rs for both ioctl entry points): the requests
/// that set an owner reserve the record; any other request passes the verdict on.
#[inline(always)]
pub fn owner_ioctl(ctx: &LsmContext, file: *const c_void, cmd: u32, previous: i32) -> i32 {
    if !matches!(cmd, FIOSETOWN | SIOCSPGRP | FIOASYNC) {
        return previous;
    }
    reserve_owner_record(ctx, file, previous)
}

/// The kernel is setting the owner now, in the setter's context.
#[lsm(hook = "file_set_fowner")]
pub fn file_set_fowner(ctx: LsmContext) -> i32 {
    let key = file_key(hook_arg!(ctx, FileSetFownerFile) as *const c_void);
    if key == 0 {
        return 0;
    }
    let domain = current_domain();
    if domain == NO_DOMAIN {
        file_owner::forget(key);
    } else {
        // Normally reserved already by file_fcntl/file_ioctl; this covers any other path.
        let _ = file_owner::record(key, domain);
    }
    0
}

#[lsm(hook = "file_free_security")]
pub fn file_free_security(ctx: LsmContext) -> i32 {
    // Room back for a later file's record (forget skips the delete while there is none).
    let key = file_key(hook_arg!(ctx, FileFreeSecurityFile) as *const c_void);
    if key != 0 {
        file_owner::forget(key);
    }
    0
}

#[lsm(hook = "file_send_sigiotask")]
pub fn file_send_sigiotask(ctx: LsmContext) -> i32 {
    let previous = verdict!(ctx, FileSendSigiotaskVerdict);
    if previous != 0 {
        return previous;
    }
    let target = hook_arg!(ctx, FileSendSigiotaskTarget) as *mut task_struct;
    let sig = hook_arg!(ctx, FileSendSigiotaskSig) as u32;
    let key = fown_file_key(hook_arg!(ctx, FileSendSigiotaskFown));
    if key == 0 {
        // The file cannot be found from its owner struct, so neither can the setter: the
        // signal is not delivered (fail closed), and the refusal is recorded.
        return refuse_task(
            hook::FILE_SEND_SIGIOTASK,
            sig,
            UNDECIDABLE,
            target,
            domain_of(target),
        );
    }
    let setter = file_owner::setter_domain(key);
    if setter == NO_DOMAIN {
        return 0;
    }
    let target_domain = domain_of(target);
    if may_reach(setter, target_domain) {
        return 0;
    }
    // The actor's domain is the owner-setter's; pid and comm in the record are those of the
    // task whose I/O triggered the signal.
    refuse_task(
        hook::FILE_SEND_SIGIOTASK,
        sig,
        setter,
        target,
        target_domain,
    )
}
