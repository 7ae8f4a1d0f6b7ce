//! Writes one empty program per attach point of bulkhead's object, taken from the lists the
//! agent attaches from (LSM_PROGRAMS, TRACE_PROGRAMS), so the floor can never cover fewer or
//! other hooks than bulkhead does.
use std::{env, fmt::Write, path::PathBuf};

use bulkhead_common::{LSM_PROGRAMS, lifecycle::TRACE_PROGRAMS};

fn main() {
    let mut source = String::new();
    for (program, hook) in LSM_PROGRAMS {
        writeln!(
            source,
            "#[lsm(hook = \"{hook}\")]\npub fn {program}(_ctx: LsmContext) -> i32 {{ 0 }}"
        )
        .unwrap();
    }
    for (program, tracepoint) in TRACE_PROGRAMS {
        writeln!(
            source,
            "#[btf_tracepoint(function = \"{tracepoint}\")]\n\
             pub fn {program}(_ctx: BtfTracePointContext) -> i32 {{ 0 }}"
        )
        .unwrap();
    }
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("floor_programs.rs");
    std::fs::write(out, source).unwrap();
}
