//! The benchmarks' floor: an empty program on each of bulkhead's attach points. What bulkhead
//! costs beyond this is its programs' work; what this costs over no programs at all is the
//! kernel's price for having a BPF LSM program on a hook, which no program can lower.
#![no_std]
#![no_main]

use aya_ebpf::{
    macros::{btf_tracepoint, lsm},
    programs::{BtfTracePointContext, LsmContext},
};

include!(concat!(env!("OUT_DIR"), "/floor_programs.rs"));

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
