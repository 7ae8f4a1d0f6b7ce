//! The kernel matrix: the kernel `linux-image-amd64` depends on today in each Debian suite that
//! fleets run, fetched with apt from the mirror this machine already uses, cached, and reused.
//!
//! Each suite gets its own apt source list, package lists and package cache under the cache
//! directory (`apt-get -o Dir::Etc::sourcelist=...`), so the system's own sources, lists and
//! package cache are never touched. Besides the image, the kernel's BTF is extracted from it
//! (`vmlinux.btf`): the agent's host tests read the hook prototypes of every kernel in the
//! matrix from it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

use crate::{
    cmd::{output, run},
    setup::cache_dir,
};

/// A Debian suite of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Suite {
    /// The name used on the command line (`--kernel bookworm`) and in the cache.
    pub name: &'static str,
    /// The suites whose `main` component the suite's own list names.
    apt_suites: &'static [&'static str],
    /// Security suites, from the security mirror (stable releases get kernels there first).
    security_suites: &'static [&'static str],
}

/// Debian 12 (oldstable), Debian 13 (stable), Debian unstable: what fleets run today.
pub const MATRIX: &[Suite] = &[
    Suite {
        name: "bookworm",
        apt_suites: &["bookworm", "bookworm-updates"],
        security_suites: &["bookworm-security"],
    },
    Suite {
        name: "trixie",
        apt_suites: &["trixie", "trixie-updates"],
        security_suites: &["trixie-security"],
    },
    Suite {
        name: "sid",
        apt_suites: &["sid"],
        security_suites: &[],
    },
];

/// `vm-run`'s kernel unless `--kernel` names another.
pub const DEFAULT_KERNEL: &str = "bookworm";

/// One kernel of the matrix, ready to boot.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// The suite it comes from (`bookworm`, `trixie`, `sid`).
    pub suite: &'static str,
    /// The Debian package `linux-image-amd64` depends on, e.g. `linux-image-6.1.0-57-amd64`.
    pub package: String,
    /// What `uname -r` prints in the guest, e.g. `6.1.0-57-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
}

pub fn suite_by_name(name: &str) -> anyhow::Result<Suite> {
    MATRIX
        .iter()
        .find(|suite| suite.name == name)
        .copied()
        .with_context(|| {
            let known: Vec<&str> = MATRIX.iter().map(|s| s.name).collect();
            format!("unknown kernel '{name}': choose from {}", known.join(", "))
        })
}

/// Fetches (or finds cached) the kernel of each suite, in matrix order.
pub fn fetch(suites: &[Suite]) -> anyhow::Result<Vec<Kernel>> {
    let mirrors = Mirrors::from_system()?;
    suites
        .iter()
        .map(|suite| {
            eprintln!("  {}:", suite.name);
            fetch_one(suite, &mirrors).with_context(|| format!("the {} kernel", suite.name))
        })
        .collect()
}

/// The Debian mirrors this machine's apt already uses.
struct Mirrors {
    archive: String,
    security: String,
}

impl Mirrors {
    /// The mirrors serving this system's own Debian release (its `VERSION_CODENAME` and
    /// `<codename>-security`); other repositories in the sources (vendors, nodesource, ...)
    /// carry no Debian kernels.
    fn from_system() -> anyhow::Result<Self> {
        let mut text = fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
        if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
            for entry in entries.filter_map(Result::ok) {
                text.push('\n');
                text.push_str(&fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        let codename = fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|release| {
                release.lines().find_map(|line| {
                    line.strip_prefix("VERSION_CODENAME=")
                        .map(|name| name.trim_matches('"').to_owned())
                })
            })
            .context("no VERSION_CODENAME in /etc/os-release: is this a Debian system?")?;
        let entries = source_entries(&text);
        let serving = |suite: &str| {
            entries
                .iter()
                .find(|(_, suites)| suites.iter().any(|s| s == suite))
                .map(|(uri, _)| uri.clone())
        };
        let archive = serving(&codename).with_context(|| {
            format!(
                "no mirror for Debian {codename} in /etc/apt/sources.list(.d): the kernel \
                 matrix is fetched from the mirror the system already uses"
            )
        })?;
        let security = serving(&format!("{codename}-security"))
            .unwrap_or_else(|| format!("{}-security", archive.trim_end_matches('/')));
        Ok(Self { archive, security })
    }
}

/// (URI, suites) of every entry in apt sources, one-line (`deb URI suite ...`) or deb822
/// (`URIs:` and `Suites:` in one paragraph).
fn source_entries(sources: &str) -> Vec<(String, Vec<String>)> {
    let mut entries = Vec::new();
    let words = |text: &str| {
        text.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    for paragraph in sources.split("\n\n") {
        let (mut uris, mut suites) = (Vec::new(), Vec::new());
        for line in paragraph.lines().map(str::trim) {
            if line.starts_with('#') {
                continue;
            }
            if let Some(rest) = line.strip_prefix("URIs:") {
                uris.extend(words(rest));
            } else if let Some(rest) = line.strip_prefix("Suites:") {
                suites.extend(words(rest));
            } else if let Some(rest) = line.strip_prefix("deb ") {
                // Skip an option block such as [signed-by=...].
                let rest = match rest.trim_start().strip_prefix('[') {
                    Some(options) => options.split_once(']').map_or("", |(_, after)| after),
                    None => rest,
                };
                let mut fields = rest.split_whitespace();
                if let (Some(uri), Some(suite)) = (fields.next(), fields.next()) {
                    entries.push((uri.to_owned(), vec![suite.to_owned()]));
                }
            }
        }
        entries.extend(uris.into_iter().map(|uri| (uri, suites.clone())));
    }
    entries.retain(|(uri, _)| uri.starts_with("http://") || uri.starts_with("https://"));
    entries
}

/// Runs apt against the suite's own list, lists and cache: never the system's.
struct SuiteApt {
    dir: PathBuf,
}

impl SuiteApt {
    fn new(suite: &Suite, mirrors: &Mirrors) -> anyhow::Result<Self> {
        let dir = cache_dir().join("apt").join(suite.name);
        for sub in ["lists/partial", "cache/archives/partial"] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
        let mut list = String::new();
        for (uri, suites) in [
            (&mirrors.archive, suite.apt_suites),
            (&mirrors.security, suite.security_suites),
        ] {
            for name in suites {
                list.push_str(&format!("deb [signed-by={keyring}] {uri} {name} main\n"));
            }
        }
        fs::write(dir.join("sources.list"), list)?;
        Ok(Self { dir })
    }

    fn options(&self) -> Vec<String> {
        let d = |sub: &str| self.dir.join(sub).display().to_string();
        vec![
            format!("-oDir::Etc::sourcelist={}", d("sources.list")),
            "-oDir::Etc::sourceparts=/dev/null".to_owned(),
            format!("-oDir::State::Lists={}", d("lists")),
            format!("-oDir::Cache={}", d("cache")),
            // The suite's packages are only looked at and downloaded, never installed.
            "-oDir::State::status=/dev/null".to_owned(),
        ]
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.args(self.options());
        command
    }

    fn update(&self) -> anyhow::Result<()> {
        run(self.command("apt-get").args(["-q", "update"]))
            .context("`apt-get update` for the suite failed: is the Debian mirror reachable?")
    }

    /// The packages `package` depends on (first alternative of each), by name.
    fn depends(&self, package: &str) -> anyhow::Result<Vec<String>> {
        let listing = output(self.command("apt-cache").args(["depends", package]))?;
        Ok(parse_depends(&listing))
    }

    fn download(&self, package: &str, into: &Path) -> anyhow::Result<PathBuf> {
        let _ = fs::remove_dir_all(into);
        fs::create_dir_all(into)?;
        run(self
            .command("apt-get")
            .current_dir(into)
            .args(["-q", "download", package]))
        .with_context(|| format!("`apt-get download {package}` failed"))?;
        fs::read_dir(into)?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
            .with_context(|| format!("apt-get download {package} produced no .deb"))
    }
}

/// `Depends:` lines of `apt-cache depends` (a `|` marks an alternative; the first is taken).
fn parse_depends(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|line| {
            let line = line.trim().trim_start_matches('|');
            line.strip_prefix("Depends: ")
                .or_else(|| line.strip_prefix("PreDepends: "))
        })
        .filter(|name| !name.starts_with('<'))
        .map(str::to_owned)
        .collect()
}

/// The kernel image package of a suite: what `linux-image-amd64` depends on.
fn image_package(apt: &SuiteApt) -> anyhow::Result<String> {
    let pick = |deps: Vec<String>| {
        deps.into_iter()
            .find(|dep| dep.starts_with("linux-image-") && dep != "linux-image-amd64")
    };
    if let Some(package) = apt.depends("linux-image-amd64").ok().and_then(pick) {
        return Ok(package);
    }
    // Lists not fetched yet (or stale): refresh once.
    apt.update()?;
    pick(apt.depends("linux-image-amd64")?)
        .context("linux-image-amd64 lists no linux-image-* dependency")
}

fn fetch_one(suite: &Suite, mirrors: &Mirrors) -> anyhow::Result<Kernel> {
    let apt = SuiteApt::new(suite, mirrors)?;
    let store = cache_dir().join("kernel");
    let package = match image_package(&apt) {
        Ok(package) => package,
        Err(err) => match newest_cached(&store, suite.name) {
            Some(kernel) => {
                eprintln!(
                    "    cannot resolve linux-image-amd64 ({err:#}); using cached {}",
                    kernel.package
                );
                return Ok(kernel);
            }
            None => return Err(err),
        },
    };
    let dir = store.join(&package);
    if let Some(kernel) = cached(&dir, suite.name) {
        eprintln!("    {package} cached at {}", dir.display());
        return Ok(kernel);
    }
    let work = store.join(format!("download-{}", suite.name));
    let result = download_image(&apt, &package, &work, &dir);
    let _ = fs::remove_dir_all(&work);
    result?;
    fs::write(dir.join("suite"), suite.name)?;
    eprintln!("    {package} downloaded to {}", dir.display());
    cached(&dir, suite.name).context("the downloaded kernel is incomplete")
}

/// Finds the image in the package (Debian 12/13: `/boot/vmlinuz-<release>`) or in the
/// `linux-binary-<release>` package it depends on (sid: `/usr/lib/modules/<release>/vmlinuz`),
/// and stores it with its config and BTF under `dir`.
fn download_image(apt: &SuiteApt, package: &str, work: &Path, dir: &Path) -> anyhow::Result<()> {
    let mut candidates = vec![package.to_owned()];
    candidates.extend(
        apt.depends(package)?
            .into_iter()
            .filter(|dep| dep.starts_with("linux-binary-")),
    );
    for candidate in candidates {
        let deb = apt.download(&candidate, &work.join("deb"))?;
        let members = list_members(&deb)?;
        let Some(image) = members.iter().find(|m| is_image(m)) else {
            continue;
        };
        let config = members.iter().find(|m| is_config(m));
        let extracted = work.join("x");
        fs::create_dir_all(&extracted)?;
        let mut wanted = vec![image.clone()];
        wanted.extend(config.cloned());
        let script = format!(
            "dpkg-deb --fsys-tarfile '{}' | tar -x -C '{}' {}",
            deb.display(),
            extracted.display(),
            wanted
                .iter()
                .map(|m| format!("'{m}'"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        run(Command::new("sh").args(["-c", &script]))?;
        let staging = work.join("store");
        fs::create_dir_all(&staging)?;
        fs::copy(extracted.join(image), staging.join("vmlinuz"))?;
        if let Some(config) = config {
            fs::copy(extracted.join(config), staging.join("config"))?;
        }
        let release = release_of(image).context("cannot tell the release from the image path")?;
        fs::write(staging.join("release"), &release)?;
        fs::write(staging.join("package"), package)?;
        crate::kernel_btf::extract(&staging.join("vmlinuz"), &staging.join("vmlinux.btf"))
            .context("extracting the kernel's BTF")?;
        // Appear in the cache only once complete.
        let _ = fs::remove_dir_all(dir);
        fs::rename(&staging, dir)?;
        return Ok(());
    }
    bail!("neither {package} nor a linux-binary-* it depends on holds a kernel image")
}

fn list_members(deb: &Path) -> anyhow::Result<Vec<String>> {
    let listing = output(Command::new("dpkg-deb").arg("--contents").arg(deb))?;
    Ok(listing
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .map(str::to_owned)
        .collect())
}

fn is_image(member: &str) -> bool {
    let member = member.trim_start_matches("./");
    (member.starts_with("boot/vmlinuz-"))
        || (member.starts_with("usr/lib/modules/") && member.ends_with("/vmlinuz"))
}

fn is_config(member: &str) -> bool {
    let member = member.trim_start_matches("./");
    member.starts_with("boot/config-")
        || (member.starts_with("usr/lib/modules/") && member.ends_with("/config"))
}

/// `boot/vmlinuz-6.1.0-57-amd64` or `usr/lib/modules/7.2.13+deb14-amd64/vmlinuz` -> the release.
fn release_of(image: &str) -> Option<String> {
    let image = image.trim_start_matches("./");
    if let Some(release) = image.strip_prefix("boot/vmlinuz-") {
        return Some(release.to_owned());
    }
    image
        .strip_prefix("usr/lib/modules/")?
        .strip_suffix("/vmlinuz")
        .map(str::to_owned)
}

fn cached(dir: &Path, suite: &'static str) -> Option<Kernel> {
    let read = |name: &str| fs::read_to_string(dir.join(name)).ok();
    let vmlinuz = dir.join("vmlinuz");
    if !vmlinuz.is_file() || !dir.join("vmlinux.btf").is_file() {
        return None;
    }
    Some(Kernel {
        suite,
        package: read("package")?.trim().to_owned(),
        release: read("release")?.trim().to_owned(),
        vmlinuz,
    })
}

/// The newest complete kernel of `suite` in the cache, when the mirror cannot be asked.
fn newest_cached(store: &Path, suite: &'static str) -> Option<Kernel> {
    let mut kernels: Vec<Kernel> = fs::read_dir(store)
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| {
            fs::read_to_string(entry.path().join("suite")).is_ok_and(|s| s.trim() == suite)
        })
        .filter_map(|entry| cached(&entry.path(), suite))
        .collect();
    kernels.sort_by(|a, b| a.package.cmp(&b.package));
    kernels.pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mirrors_from_both_source_formats() {
        let deb822 = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n\n\
                      Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            source_entries(deb822),
            [
                (
                    "http://deb.debian.org/debian".to_owned(),
                    vec!["bookworm".to_owned(), "bookworm-updates".to_owned()]
                ),
                (
                    "http://deb.debian.org/debian-security".to_owned(),
                    vec!["bookworm-security".to_owned()]
                ),
            ]
        );
        let one_line = "# deb http://old/ x main\n\
                        deb [signed-by=/k.gpg arch=amd64] http://m.example/debian bookworm main\n\
                        deb https://deb.nodesource.com/node_20.x nodistro main\n";
        assert_eq!(
            source_entries(one_line),
            [
                (
                    "http://m.example/debian".to_owned(),
                    vec!["bookworm".to_owned()]
                ),
                (
                    "https://deb.nodesource.com/node_20.x".to_owned(),
                    vec!["nodistro".to_owned()]
                ),
            ]
        );
    }

    #[test]
    fn depends_takes_first_alternatives_and_skips_virtual_packages() {
        let listing = "linux-image-7.2.13+deb14-amd64\n  PreDepends: linux-base\n \
                       |Depends: dracut\n  Depends: initramfs-tools\n  Depends: <linux-initramfs-tool>\n    \
                       dracut\n  Depends: linux-binary-7.2.13+deb14-amd64\n";
        assert_eq!(
            parse_depends(listing),
            [
                "linux-base",
                "dracut",
                "initramfs-tools",
                "linux-binary-7.2.13+deb14-amd64"
            ]
        );
    }

    #[test]
    fn finds_the_image_in_both_layouts() {
        assert!(is_image("./boot/vmlinuz-6.1.0-57-amd64"));
        assert!(is_image("./usr/lib/modules/7.2.13+deb14-amd64/vmlinuz"));
        assert!(!is_image(
            "./usr/lib/modules/7.2.13+deb14-amd64/kernel/x.ko"
        ));
        assert_eq!(
            release_of("./boot/vmlinuz-6.1.0-57-amd64").as_deref(),
            Some("6.1.0-57-amd64")
        );
        assert_eq!(
            release_of("./usr/lib/modules/7.2.13+deb14-amd64/vmlinuz").as_deref(),
            Some("7.2.13+deb14-amd64")
        );
    }

    #[test]
    fn unknown_kernel_names_the_known_ones() {
        let err = suite_by_name("buster").unwrap_err().to_string();
        assert!(err.contains("bookworm, trixie, sid"), "{err}");
    }
}
