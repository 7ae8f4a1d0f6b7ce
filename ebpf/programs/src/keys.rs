//! Keys and keyrings belong to the domain of the task that created them, or to no domain when
//! their creator was in none. A task in a domain may use only its own domain's keys: the
//! user keyring (`@u`, `@us`) and the session keyring it inherited from its supervisor, and
//! every key in them, are refused to it unless its own domain made them.
//!
//! The creator's domain is recorded at `key_alloc` (the creating task is `current`; the serial
//! number does not exist yet, so the record is keyed by the key's address). Every use of a key
//! passes `key_permission`: lookups by serial or special id, searches (per keyring and per
//! candidate key), read, update, link, unlink, set attributes, invalidate, `/proc/keys`, and
//! joining a named session keyring. It must refuse with EPERM: `keyctl_read_key` reads a key
//! the caller possesses despite an EACCES.
//!
//! `KEYCTL_SESSION_TO_PARENT` replaces the *parent's* session keyring, checked only against the
//! parent's uid; its one LSM hook, `cred_alloc_blank`, runs before the kernel picks the parent,
//! so it is refused inside domains outright.

use crate::agent_set::agent_set;
use aya_ebpf::{
    EbpfContext,
    helpers::generated::bpf_get_func_arg,
    macros::{lsm, map},
    maps::LruHashMap,
    programs::LsmContext,
};
use aya_log_ebpf::info;
use bulkhead_common::{DomainId, KEY_OWNER_ENTRIES, NO_DOMAIN, audit::hook};

use crate::{
    audit::{refuse, refuse_key},
    creator_record::{self, NotRecorded},
    hook_args::{hook_arg, verdict},
    may_reach,
    task_domain::restricted_actor,
};

#[map(name = "KEY_OWNER")]
static KEY_OWNER: LruHashMap<u64, DomainId> = LruHashMap::with_max_entries(KEY_OWNER_ENTRIES, 0);

// The context slot of `key_permission`'s `key_ref`, set by the agent from BTF. Unset, it lies
// beyond every argument and the read fails.
agent_set!(KEY_PERMISSION_KEY_REF_SLOT = u64::MAX);

/// The possession bit a `key_ref_t` carries in its lowest bit.
const KEY_REF_POSSESSED: u64 = 1;

/// A new key or keyring: its creator's domain is recorded. One made outside every domain gets
/// no record, and whatever an earlier key left at its address is dropped (keys are freed
/// without a hook from 6.12, and on a refused allocation on every kernel).
#[lsm(hook = "key_alloc")]
pub fn key_alloc(ctx: LsmContext) -> i32 {
    let previous = verdict!(ctx, KeyAllocVerdict);
    if previous != 0 {
        return previous;
    }
    match creator_record::record_creator(&KEY_OWNER, hook_arg!(ctx, KeyAllocKey)) {
        Ok(()) => 0,
        Err(NotRecorded::NoRoom { domain, errno }) => {
            info!(
                &ctx,
                "bulkhead: key of domain {} not created, its owner cannot be recorded", domain
            );
            errno
        }
        Err(undecidable) => undecidable.verdict(),
    }
}

#[lsm(hook = "key_permission")]
pub fn key_permission(ctx: LsmContext) -> i32 {
    let actor = match restricted_actor(verdict!(ctx, KeyPermissionVerdict)) {
        Ok(actor) => actor,
        Err(verdict) => return verdict,
    };
    let need = hook_arg!(ctx, KeyPermissionNeed) as u32;
    let Some(key) = key_of_ref(&ctx) else {
        return refuse_key(hook::KEY_PERMISSION, need, actor, 0, NO_DOMAIN);
    };
    // SAFETY: a value of this map is a DomainId.
    let owner = unsafe { KEY_OWNER.get(&key) }.copied().unwrap_or(NO_DOMAIN);
    if may_reach(actor, owner) {
        return 0;
    }
    refuse_key(hook::KEY_PERMISSION, need, actor, key, owner)
}

/// The address of the key `key_permission` is asked about, or `None` if it cannot be read.
#[inline(always)]
fn key_of_ref(ctx: &LsmContext) -> Option<u64> {
    let slot = KEY_PERMISSION_KEY_REF_SLOT.get();
    let mut key_ref: u64 = 0;
    // SAFETY: the helper bounds-checks the slot against the hook's argument count and writes
    // one u64 into `key_ref`.
    let read = unsafe { bpf_get_func_arg(ctx.as_ptr(), slot as u32, &mut key_ref) };
    if read != 0 || slot > u64::from(u32::MAX) || key_ref == 0 {
        return None;
    }
    Some(key_ref & !KEY_REF_POSSESSED)
}

/// `KEYCTL_SESSION_TO_PARENT`, the only caller of `cred_alloc_blank`.
#[lsm(hook = "cred_alloc_blank")]
pub fn cred_alloc_blank(ctx: LsmContext) -> i32 {
    match restricted_actor(verdict!(ctx, CredAllocBlankVerdict)) {
        Ok(actor) => refuse(hook::CRED_ALLOC_BLANK, 0, actor),
        Err(verdict) => verdict,
    }
}
