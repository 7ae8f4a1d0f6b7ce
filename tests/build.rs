//! Compiles the benchmarks' floor (ebpf/floor: one empty program per attach point of
//! bulkhead's object) for the bpf target, so the suite can attach it in the VM.
use std::{env, path::PathBuf};

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    // The floor's programs are generated from bulkhead-common's lists of attach points.
    for source in ["../ebpf/floor", "../ebpf/common/src"] {
        println!("cargo:rerun-if-changed={source}");
    }
    let floor_dir = manifest_dir.join("../ebpf/floor").canonicalize()?;
    let root_dir = floor_dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {}", floor_dir.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "bulkhead-floor-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
