//! Reading a hook's arguments without knowing their slots (see bulkhead_common::hook_abi).
//!
//! Each read is one 64-bit context load at the argument's placeholder offset; the agent
//! rewrites the offset to the slot the running kernel's prototype gives before loading. The
//! load must stay a single `ldxdw` from the context pointer with the offset in the instruction,
//! so it is volatile and its offset a constant.

use aya_ebpf::EbpfContext;

/// The raw 64-bit slot the agent maps placeholder `OFFSET` to.
#[inline(always)]
pub fn slot<const OFFSET: i16>(ctx: &impl EbpfContext) -> u64 {
    // SAFETY: the context of a BTF-typed program is an array of u64 slots; the verifier checks
    // the patched offset against the hook's prototype (and refuses an unpatched one).
    unsafe {
        ctx.as_ptr()
            .cast::<u8>()
            .offset(OFFSET as isize)
            .cast::<u64>()
            .read_volatile()
    }
}

/// `hook_arg!(ctx, Id)` reads the argument `ArgId::Id` as a u64; `as` converts it to the
/// pointer or integer type the parameter has.
macro_rules! hook_arg {
    ($ctx:expr, $id:ident) => {
        $crate::hook_args::slot::<
            { bulkhead_common::hook_abi::placeholder(bulkhead_common::hook_abi::ArgId::$id) },
        >(&$ctx)
    };
}
pub(crate) use hook_arg;

/// The verdict of the LSMs before, as the hook's int return value.
macro_rules! verdict {
    ($ctx:expr, $id:ident) => {
        $crate::hook_args::hook_arg!($ctx, $id) as i32
    };
}
pub(crate) use verdict;
