//! Unix sockets belong to the domain of the task that made them, or to no domain when their
//! maker was in none. A task in a domain may connect or send only to sockets of its own domain,
//! and to the few socket files the agent marks reachable (its own API socket, the node's
//! configured `sockets.reachable` paths such as a syslog socket).
//!
//! The maker's domain is written into socket storage when the socket is created
//! (`socket_post_create`, which `socket()` and both ends of `socketpair()` pass; `current` is
//! the maker there). The kernel checks a connection at two places, and both give the peer:
//!
//! - `unix_stream_connect`: connect() of a stream or seqpacket socket, to a pathname or
//!   abstract address, with the listening socket;
//! - `unix_may_send`: connect() of a datagram socket, and every datagram sent (send, sendto and
//!   sendmsg to a name, or on a connected socket), with the receiving socket.
//!
//! Pathname and abstract addresses are judged alike, by the socket behind them: an abstract
//! name has no file whose permissions could be set, and a socket file only names the socket.
//! A datagram sent on a socket already connected to that very peer passes: the connection was
//! judged when it was made (or was made outside any domain and handed over, as a stream
//! connection is).

use core::{ffi::c_void, ptr};

use aya_ebpf::{
    helpers::generated::{bpf_inode_storage_get, bpf_skc_to_unix_sock},
    macros::lsm,
    programs::LsmContext,
};
use bulkhead_common::{DomainId, NO_DOMAIN, UNDECIDABLE, audit::hook};

use crate::{
    EAGAIN, ENOMEM,
    audit::refuse_socket,
    hook_args::{hook_arg, verdict},
    kernel_layout::{dentry_inode, socket_sk, unix_bound_dentry, unix_peer},
    local_storage::{INODE_STORAGE, LocalStorage, SK_STORAGE, set_sk_domain, sk_domain},
    may_reach,
    task_domain::{current_domain, restricted_actor},
};

const AF_UNIX: i32 = 1;

/// Audit `access` values: which operation reached the socket.
const ACCESS_CONNECT: u32 = 1;
const ACCESS_SEND: u32 = 2;

#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "SOCKET_DOMAIN")]
static SOCKET_DOMAIN: LocalStorage<DomainId, SK_STORAGE> = LocalStorage::new();

#[unsafe(link_section = ".maps")]
#[unsafe(export_name = "UNIX_REACHABLE")]
static UNIX_REACHABLE: LocalStorage<u64, INODE_STORAGE> = LocalStorage::new();

/// A new socket of a task in a domain is that domain's. A socket whose domain cannot be
/// recorded is not created: it would be taken for one made outside every domain.
#[lsm(hook = "socket_post_create")]
pub fn socket_post_create(ctx: LsmContext) -> i32 {
    let previous = verdict!(ctx, SocketPostCreateVerdict);
    if previous != 0 {
        return previous;
    }
    // Sockets the kernel makes for itself are nobody's; only Unix sockets are judged.
    if hook_arg!(ctx, SocketPostCreateFamily) as i32 != AF_UNIX
        || hook_arg!(ctx, SocketPostCreateKern) as i32 != 0
    {
        return 0;
    }
    let domain = current_domain();
    if domain == NO_DOMAIN {
        return 0;
    }
    if domain == UNDECIDABLE {
        return -EAGAIN;
    }
    let sk = socket_sk(hook_arg!(ctx, SocketPostCreateSock) as *const c_void);
    if sk.is_null() {
        return -EAGAIN;
    }
    // A new socket has no storage yet; should one be there, the maker's domain replaces it.
    if !set_sk_domain(&SOCKET_DOMAIN, sk, domain) {
        return -ENOMEM;
    }
    0
}

/// connect() of a stream or seqpacket socket, to the listener `other`.
#[lsm(hook = "unix_stream_connect")]
pub fn unix_stream_connect(ctx: LsmContext) -> i32 {
    let actor = match restricted_actor(verdict!(ctx, UnixStreamConnectVerdict)) {
        Ok(actor) => actor,
        Err(verdict) => return verdict,
    };
    let other = hook_arg!(ctx, UnixStreamConnectOther) as *mut c_void;
    check_peer(hook::UNIX_STREAM_CONNECT, ACCESS_CONNECT, actor, other)
}

/// connect() of a datagram socket, and every datagram sent, to the socket `other`.
#[lsm(hook = "unix_may_send")]
pub fn unix_may_send(ctx: LsmContext) -> i32 {
    let actor = match restricted_actor(verdict!(ctx, UnixMaySendVerdict)) {
        Ok(actor) => actor,
        Err(verdict) => return verdict,
    };
    let other_socket = hook_arg!(ctx, UnixMaySendOther) as *const c_void;
    let other = if other_socket.is_null() {
        ptr::null_mut()
    } else {
        socket_sk(other_socket)
    };
    let sender_socket = hook_arg!(ctx, UnixMaySendSock) as *const c_void;
    if !other.is_null() && !sender_socket.is_null() {
        let sender = socket_sk(sender_socket);
        if !sender.is_null() && connected_peer(sender) == other as u64 {
            return 0;
        }
    }
    check_peer(hook::UNIX_MAY_SEND, ACCESS_SEND, actor, other)
}

/// May a task of domain `actor` reach the socket `other`? A null socket (the hook could not
/// name it) is refused.
#[inline(always)]
fn check_peer(hook: u32, access: u32, actor: DomainId, other: *mut c_void) -> i32 {
    if other.is_null() {
        return refuse_socket(
            hook,
            access,
            actor,
            ptr::null_mut(),
            NO_DOMAIN,
            ptr::null_mut(),
        );
    }
    let owner = socket_domain(other);
    if may_reach(actor, owner) {
        return 0;
    }
    // SAFETY: `other` is a BTF pointer to a live `struct sock`; the helper checks its family
    // and returns null for anything but a Unix socket.
    let unix = unsafe { bpf_skc_to_unix_sock(other) }.cast::<c_void>();
    let socket_file = if unix.is_null() {
        ptr::null_mut()
    } else {
        bound_socket_file(unix)
    };
    if is_reachable(socket_file) {
        return 0;
    }
    refuse_socket(hook, access, actor, unix, owner, socket_file)
}

/// The domain of the task that made the socket `sk`, or none.
#[inline(always)]
fn socket_domain(sk: *mut c_void) -> DomainId {
    sk_domain(&SOCKET_DOMAIN, sk)
}

/// The socket file `unix` is bound to, or null.
#[inline(always)]
fn bound_socket_file(unix: *mut c_void) -> *mut c_void {
    let dentry = unix_bound_dentry(unix);
    if dentry.is_null() {
        return ptr::null_mut();
    }
    dentry_inode(dentry)
}

/// The socket `sk` is connected to, as an address for comparison only, or 0.
#[inline(always)]
fn connected_peer(sk: *mut c_void) -> u64 {
    // SAFETY: as in `check_peer`.
    let unix = unsafe { bpf_skc_to_unix_sock(sk) }.cast::<c_void>();
    if unix.is_null() {
        return 0;
    }
    unix_peer(unix) as u64
}

/// Has the agent marked `socket_file` reachable from every domain?
#[inline(always)]
fn is_reachable(socket_file: *mut c_void) -> bool {
    if socket_file.is_null() {
        return false;
    }
    // SAFETY: `socket_file` is a BTF pointer read from `dentry->d_inode`; the helper validates
    // it.
    let value = unsafe {
        bpf_inode_storage_get(UNIX_REACHABLE.as_map_ptr(), socket_file, ptr::null_mut(), 0)
    };
    !value.is_null()
}
