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
    // The interop test validates broker tokens with PyJWT, installed from PyPI into a venv.
    "python3-venv",
    // The kernel matrix: its BTF is read out of each image (xz-compressed on Debian).
    "xz-utils",
    // libfuzzer-sys compiles libFuzzer's C++ sources (`cargo xtask fuzz`).
    "g++",
];
/// What the interop test installs from PyPI (PyJWT as Airflow uses it, with its crypto backend).
const PYJWT_REQUIREMENTS: &[&str] = &["PyJWT[crypto]>=2.8,<3"];
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
    step("PyJWT for the interop test", pyjwt)?;
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

/// The Python that has PyJWT: a venv under the cache directory, made once.
pub fn pyjwt_python() -> PathBuf {
    cache_dir().join("pyjwt-venv/bin/python")
}

fn pyjwt() -> anyhow::Result<()> {
    let python = pyjwt_python();
    let ready = Command::new(&python)
        .args(["-c", "import jwt, cryptography"])
        .output()
        .is_ok_and(|output| output.status.success());
    if ready {
        eprintln!("  present");
        return Ok(());
    }
    let venv = cache_dir().join("pyjwt-venv");
    let _ = std::fs::remove_dir_all(&venv);
    run(Command::new("/usr/bin/python3")
        .args(["-m", "venv"])
        .arg(&venv))
    .context("creating the PyJWT venv (is python3-venv installed?)")?;
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(PYJWT_REQUIREMENTS))
    .context("installing PyJWT from PyPI")
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
