//! Values the agent writes into the object before loading it (`EbpfLoader::override_global`):
//! field offsets, argument slots, kernel properties read from BTF.
//!
//! Each lives in its own section, `.rodata.agent`. In plain `.rodata`, LLVM's constant merging
//! may make such a static the one copy of every identical constant in the object, and the
//! agent's value then replaces those constants as well. It did: the slot of
//! `key_permission`'s `key_ref`, initialised to `u64::MAX`, became the storage of the task
//! counter's `NOT_COUNTED` (also `u64::MAX`); the agent set the slot to 0, and `task_alloc`
//! stopped counting children. LLVM never merges a global that has a section of its own, and
//! the section is still read-only data (aya freezes every `.rodata*` map), so the verifier
//! knows each value as a constant, as the programs' pointer arithmetic requires.

/// A value the agent sets. Read with [`AgentSet::get`], never directly: a plain read of an
/// immutable static may be folded into its build-time value.
#[repr(transparent)]
pub struct AgentSet(u64);

impl AgentSet {
    /// `initial` is what the programs see if the agent sets nothing: choose the fail-closed
    /// value.
    pub const fn new(initial: u64) -> Self {
        Self(initial)
    }

    #[inline(always)]
    pub fn get(&self) -> u64 {
        // SAFETY: a valid, aligned u64; volatile so the build-time value is never folded in.
        unsafe { core::ptr::read_volatile(&self.0) }
    }
}

/// `agent_set!(NAME = initial);` declares a value the agent sets under the symbol `NAME`, in
/// `.rodata.agent`.
macro_rules! agent_set {
    ($name:ident = $initial:expr) => {
        #[unsafe(no_mangle)]
        #[unsafe(link_section = ".rodata.agent")]
        static $name: $crate::agent_set::AgentSet = $crate::agent_set::AgentSet::new($initial);
    };
}
pub(crate) use agent_set;
