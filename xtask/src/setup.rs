//! `cargo xtask setup`: install everything the build and the VM need. Idempotent: each step
//! checks first and skips what is already there. A failing step names itself, says why and
//! what to do.

use std::{path::PathBuf, process::Command};

use anyhow::Context;

use crate::{
    cmd::{output, run},
    kernels::{self, Kernel, Suite},
};

const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    // aws-lc-sys (the JWT crypto) compiles AWS-LC's C sources with the system C compiler.
    "gcc",
    // The interop tests run Airflow's own token code, installed from PyPI into a venv.
    "python3-venv",
    // The kernel matrix: its BTF is read out of each image (xz-compressed on Debian).
    "xz-utils",
    // libfuzzer-sys compiles libFuzzer's C++ sources (`cargo xtask fuzz`).
    "g++",
];
/// The Airflow the interop tests run, from PyPI; every other package is pinned by the
/// constraints file, so each run installs the same set.
const AIRFLOW_REQUIREMENTS: &[&str] = &[
    "apache-airflow-core==3.3.2",
    "apache-airflow-task-sdk==1.3.2",
];
const AIRFLOW_CONSTRAINTS: &str = "tests/interop/airflow-constraints.txt";
const BPF_LINKER_VERSION: &str = "0.13.0";
const CARGO_FUZZ_VERSION: &str = "0.13.2";
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";

/// Where slow downloads are kept between runs: `$BULKHEAD_CACHE_DIR`, else
/// `~/.cache/bulkhead`. Nothing depends on it existing.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BULKHEAD_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/bulkhead")
}

/// Everything, with the kernels of `suites` (the whole matrix for `cargo xtask setup`).
pub fn setup(suites: &[Suite]) -> anyhow::Result<Vec<Kernel>> {
    build_prerequisites()?;
    step("Airflow for the interop tests", airflow_venv)?;
    step("VM kernels", || kernels::fetch(suites))
}

/// What building the agent needs (its build script compiles the eBPF programs).
pub fn build_prerequisites() -> anyhow::Result<()> {
    step("Debian packages", apt_packages)?;
    step("rust-src for nightly", rust_src)?;
    step("bpf-linker", bpf_linker)
}

/// `cargo fuzz`, for `cargo xtask fuzz` only (the normal tests replay the corpus without it).
pub fn cargo_fuzz() -> anyhow::Result<()> {
    step("cargo-fuzz", || {
        if output(Command::new("cargo").args(["fuzz", "--version"]))
            .is_ok_and(|v| v.contains(CARGO_FUZZ_VERSION))
        {
            eprintln!("  {CARGO_FUZZ_VERSION} present");
            return Ok(());
        }
        eprintln!("  building cargo-fuzz {CARGO_FUZZ_VERSION} (about a minute)");
        run(Command::new("cargo").args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
        ]))
    })
}

/// The Airflow venv's Python, under the cache directory.
pub fn airflow_python() -> PathBuf {
    airflow_venv_dir().join("bin/python")
}

pub fn airflow_venv_dir() -> PathBuf {
    cache_dir().join("airflow-venv")
}

/// Made once per constraints file: the venv keeps a copy of the file it was built from, and a
/// different one (new versions) rebuilds it.
fn airflow_venv() -> anyhow::Result<()> {
    let venv = airflow_venv_dir();
    let constraints = crate::artifacts::workspace_root().join(AIRFLOW_CONSTRAINTS);
    let wanted = std::fs::read(&constraints)
        .with_context(|| format!("reading {}", constraints.display()))?;
    let stamp = venv.join("bulkhead-constraints.txt");
    let importable = Command::new(airflow_python())
        .args(["-c", "import airflow.sdk, airflow.api_fastapi.auth.tokens"])
        .env(
            "AIRFLOW_HOME",
            std::env::temp_dir().join("bulkhead-airflow-probe"),
        )
        .output()
        .is_ok_and(|output| output.status.success());
    if importable && std::fs::read(&stamp).is_ok_and(|built| built == wanted) {
        eprintln!("  present");
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(&venv);
    run(Command::new("/usr/bin/python3")
        .args(["-m", "venv"])
        .arg(&venv))
    .context("creating the Airflow venv (is python3-venv installed?)")?;
    run(Command::new(airflow_python())
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--constraint",
        ])
        .arg(&constraints)
        .args(AIRFLOW_REQUIREMENTS))
    .context("installing Airflow from PyPI")?;
    std::fs::write(&stamp, wanted).context("recording the venv's constraints")
}

fn step<T>(name: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    eprintln!("setup: {name}");
    f().with_context(|| format!("setup step '{name}' failed"))
}

fn installed(package: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_ok_and(|status| status.contains("install ok installed"))
}

fn apt_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        eprintln!("  all present");
        return Ok(());
    }
    eprintln!("  installing {}", missing.join(" "));
    run(Command::new("apt-get").arg("update")).context(
        "`apt-get update` failed: check that the Debian mirror is reachable and you are root",
    )?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing))
    .with_context(|| format!("`apt-get install {}` failed", missing.join(" ")))
}

fn rust_src() -> anyhow::Result<()> {
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .context(
        "no nightly toolchain: the eBPF build needs one (`rustup toolchain install nightly`)",
    )?;
    if components.lines().any(|line| line.starts_with("rust-src")) {
        eprintln!("  present");
        return Ok(());
    }
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn bpf_linker() -> anyhow::Result<()> {
    if output(Command::new("bpf-linker").arg("--version"))
        .is_ok_and(|v| v.contains(BPF_LINKER_VERSION))
    {
        eprintln!("  {BPF_LINKER_VERSION} present");
        return Ok(());
    }
    eprintln!("  building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about a minute)");
    let path = format!("{LLVM_BIN}:{}", std::env::var("PATH").unwrap_or_default());
    run(Command::new("cargo")
        .env("PATH", path)
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .args(["--no-default-features", "--features", "llvm-22"]))
    .context("building bpf-linker failed: is llvm-22-dev installed (the Debian packages step)?")
}
