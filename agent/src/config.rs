//! The per-node configuration file (TOML).
//!
//! Every check happens while deserializing, so a bad value is reported by the TOML parser with
//! the file, line and column of the offending key, and nothing runs with a half-read config.

use std::{fmt, path::Path, path::PathBuf};

use serde::Deserialize;

/// Where the node config lives unless `--config` says otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/bulkhead/node.toml";
/// Where the agent listens unless the config says otherwise.
pub const DEFAULT_SOCKET_PATH: &str = "/run/bulkhead/bulkhead.sock";
/// The agent's state directory unless the config says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/bulkhead";
/// The audit log unless the config says otherwise.
pub const DEFAULT_AUDIT_LOG: &str = "/var/log/bulkhead/audit.jsonl";
/// The agent's pinned maps and links unless the config says otherwise.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/bulkhead";
pub const DEFAULT_RESCAN_INTERVAL_SECS: u64 = 5;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    #[serde(default)]
    pub agent: AgentSection,
    #[serde(default)]
    pub api: ApiSection,
    #[serde(default)]
    pub protect: ProtectSection,
    #[serde(default)]
    pub sockets: SocketsSection,
    #[serde(default)]
    pub devices: DevicesSection,
    #[serde(default)]
    pub audit: AuditSection,
    #[serde(default)]
    pub broker: crate::broker::config::BrokerSection,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// `enforce` (deny and record) or `audit` (record what would be denied, allow it).
    #[serde(default)]
    pub mode: Mode,
    /// One JSON object per line.
    #[serde(default = "default_audit_log")]
    pub log_path: AbsolutePath,
    /// Per domain: average records per second written to the log.
    #[serde(default = "default_rate_per_sec")]
    pub rate_per_sec: RateValue,
    /// Per domain: records that may be written at once before the rate applies.
    #[serde(default = "default_burst")]
    pub burst: RateValue,
}

impl Default for AuditSection {
    fn default() -> Self {
        Self {
            mode: Mode::default(),
            log_path: default_audit_log(),
            rate_per_sec: default_rate_per_sec(),
            burst: default_burst(),
        }
    }
}

fn default_audit_log() -> AbsolutePath {
    AbsolutePath(PathBuf::from(DEFAULT_AUDIT_LOG))
}

fn default_rate_per_sec() -> RateValue {
    RateValue(20)
}

fn default_burst() -> RateValue {
    RateValue(100)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Audit,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Enforce => "enforce",
            Self::Audit => "audit",
        }
    }
}

/// A count from 1 to 100000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u64")]
pub struct RateValue(u64);

impl RateValue {
    pub fn get(self) -> u64 {
        self.0
    }
}

impl TryFrom<u64> for RateValue {
    type Error = String;

    fn try_from(value: u64) -> Result<Self, Self::Error> {
        if (1..=100_000).contains(&value) {
            Ok(Self(value))
        } else {
            Err(format!("expected a number from 1 to 100000, got {value}"))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// Minimum level of the agent's own log lines (`RUST_LOG` overrides it).
    #[serde(default)]
    pub log_level: LogLevel,
    /// The agent's own state (and, later, key) directory; always protected.
    #[serde(default = "default_state_dir")]
    pub state_dir: AbsolutePath,
    /// Where in bpffs the agent pins its maps and links; always protected.
    #[serde(default = "default_pin_dir")]
    pub pin_dir: AbsolutePath,
}

impl Default for AgentSection {
    fn default() -> Self {
        Self {
            log_level: LogLevel::default(),
            state_dir: default_state_dir(),
            pin_dir: default_pin_dir(),
        }
    }
}

fn default_pin_dir() -> AbsolutePath {
    AbsolutePath(PathBuf::from(DEFAULT_PIN_DIR))
}

fn default_state_dir() -> AbsolutePath {
    AbsolutePath(PathBuf::from(DEFAULT_STATE_DIR))
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectSection {
    /// Files and directories (shell globs allowed) no process in a domain may reach.
    #[serde(default)]
    pub paths: Vec<ProtectedPattern>,
    /// Seconds between full re-resolutions of `paths`.
    #[serde(default = "default_rescan_interval")]
    pub rescan_interval_secs: RescanInterval,
    /// Whether a task in a domain may use a descriptor of a protected file it already holds
    /// (inherited, received, or opened before the file was marked). Read at start only.
    #[serde(default)]
    pub handed_over_descriptors: HandedOverDescriptors,
}

/// What happens to descriptors of protected files a task in a domain holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HandedOverDescriptors {
    /// Reads, writes, mappings and receipt are refused like opens.
    #[default]
    Refuse,
    /// They work: the supervisor chose to give the file away.
    Allow,
}

impl Default for ProtectSection {
    fn default() -> Self {
        Self {
            paths: Vec::new(),
            rescan_interval_secs: default_rescan_interval(),
            handed_over_descriptors: HandedOverDescriptors::default(),
        }
    }
}

/// Unix sockets made outside every domain that tasks in domains may still connect and send to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketsSection {
    /// Socket files (pathname Unix sockets), followed through symlinks; re-marked on every
    /// rescan of the protected paths, so a service that re-creates its socket stays reachable.
    #[serde(default)]
    pub reachable: Vec<AbsolutePath>,
}

/// Character devices tasks in domains may open besides the built-in harmless set
/// ([`BUILTIN_DEVICES`]); every other device file is refused to them (ebpf/programs/src/devices.rs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicesSection {
    /// `"major:minor"` or `"major:*"` (every minor), as `ls -l` shows them: `"10:229"` for
    /// `/dev/fuse`, `"195:*"` for NVIDIA GPUs. Block devices cannot be allowed.
    #[serde(default)]
    pub allow: Vec<CharDevice>,
}

/// What `[devices] allow` may list: DEVICE_ALLOWED's room less the built-in set.
pub const MAX_ALLOWED_DEVICES: usize =
    bulkhead_common::DEVICE_ALLOWED_ENTRIES as usize - BUILTIN_DEVICES.len();

/// `/dev/null`, `zero`, `full`, `random`, `urandom`, `/dev/tty` (the caller's own terminal) and
/// `/dev/ptmx` (a new terminal): what ordinary programs open and nothing of another process's.
pub const BUILTIN_DEVICES: [CharDevice; 7] = [
    CharDevice::exact(1, 3),
    CharDevice::exact(1, 5),
    CharDevice::exact(1, 7),
    CharDevice::exact(1, 8),
    CharDevice::exact(1, 9),
    CharDevice::exact(5, 0),
    CharDevice::exact(5, 2),
];

/// A character device number, or every minor of a major.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct CharDevice {
    pub major: u32,
    /// `None`: every minor.
    pub minor: Option<u32>,
}

impl CharDevice {
    pub const fn exact(major: u32, minor: u32) -> Self {
        Self {
            major,
            minor: Some(minor),
        }
    }

    /// The DEVICE_ALLOWED key of this entry.
    pub fn map_key(self) -> u32 {
        match self.minor {
            Some(minor) => bulkhead_common::kernel_dev(self.major, minor),
            None => bulkhead_common::device_any_minor(self.major),
        }
    }
}

impl TryFrom<String> for CharDevice {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        let bad = || {
            format!(
                "expected \"major:minor\" or \"major:*\" (as ls -l shows a device), got {value:?}"
            )
        };
        let (major, minor) = value.split_once(':').ok_or_else(bad)?;
        let major: u32 = major.parse().map_err(|_| bad())?;
        // The kernel's dev_t holds a 12-bit major and a 20-bit minor; the all-ones minor is
        // the map's "every minor".
        if major >= 1 << 12 {
            return Err(format!(
                "major {major} is out of range (0 to 4095) in {value:?}"
            ));
        }
        let minor = match minor {
            "*" => None,
            minor => {
                let minor: u32 = minor.parse().map_err(|_| bad())?;
                if minor >= 0xf_ffff {
                    return Err(format!(
                        "minor {minor} is out of range (0 to 1048574) in {value:?}"
                    ));
                }
                Some(minor)
            }
        };
        Ok(Self { major, minor })
    }
}

fn default_rescan_interval() -> RescanInterval {
    RescanInterval(DEFAULT_RESCAN_INTERVAL_SECS)
}

/// Seconds between rescans of the protected paths, 1 to 3600.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u64")]
pub struct RescanInterval(u64);

impl RescanInterval {
    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.0)
    }
}

impl TryFrom<u64> for RescanInterval {
    type Error = String;

    fn try_from(value: u64) -> Result<Self, Self::Error> {
        if (1..=3600).contains(&value) {
            Ok(Self(value))
        } else {
            Err(format!(
                "expected a number of seconds from 1 to 3600, got {value}"
            ))
        }
    }
}

/// An absolute path or shell glob naming protected files or directories.
///
/// Refused: relative paths, `..`, invalid glob syntax, and patterns so broad they would lock
/// every task out of the whole filesystem (`/`, or a wildcard in the first component).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ProtectedPattern(String);

impl ProtectedPattern {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ProtectedPattern {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        let path = Path::new(&value);
        if !path.is_absolute() {
            return Err(format!("expected an absolute path or glob, got {value:?}"));
        }
        if path
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(format!("expected a path without `..`, got {value:?}"));
        }
        let first = path
            .components()
            .nth(1)
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
        match first {
            None => {
                return Err(
                    "refusing to protect `/`: no task could use the filesystem at all".to_owned(),
                );
            }
            Some(first) if first.contains(['*', '?', '[']) => {
                return Err(format!(
                    "refusing {value:?}: a wildcard in the first path component would protect \
                     top-level system directories"
                ));
            }
            Some(_) => {}
        }
        glob::Pattern::new(&value).map_err(|err| format!("invalid glob {value:?}: {err}"))?;
        Ok(Self(value))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Unix socket on which the agent serves local clients (`bulkhead exec`, supervisors).
    #[serde(default = "default_socket_path")]
    pub socket_path: AbsolutePath,
    /// Permission bits of the socket, as an octal string such as "0666".
    #[serde(default = "default_socket_mode")]
    pub socket_mode: FileMode,
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            socket_path: default_socket_path(),
            socket_mode: default_socket_mode(),
        }
    }
}

fn default_socket_path() -> AbsolutePath {
    AbsolutePath(PathBuf::from(DEFAULT_SOCKET_PATH))
}

/// Any local user may ask to seal *itself* into a new domain: that only ever takes rights away
/// from the caller, so the socket is world-connectable by default.
fn default_socket_mode() -> FileMode {
    FileMode(0o666)
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Info => "info",
            Self::Debug => "debug",
            Self::Trace => "trace",
        }
    }
}

/// A path that must be absolute: the agent runs from `/`, so a relative path would silently
/// depend on how it was started.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct AbsolutePath(PathBuf);

impl AbsolutePath {
    pub fn as_path(&self) -> &Path {
        &self.0
    }
}

impl TryFrom<String> for AbsolutePath {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        let path = PathBuf::from(&value);
        if !path.is_absolute() {
            return Err(format!("expected an absolute path, got {value:?}"));
        }
        if path
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(format!("expected a path without `..`, got {value:?}"));
        }
        Ok(Self(path))
    }
}

/// Unix permission bits written as an octal string ("0660"); a bare TOML integer is refused
/// because 660 and 0o660 are easy to confuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct FileMode(u32);

impl FileMode {
    pub fn bits(self) -> u32 {
        self.0
    }
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl TryFrom<String> for FileMode {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        let digits = value.strip_prefix("0o").unwrap_or(&value);
        let valid =
            (3..=4).contains(&digits.len()) && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
        let bits = valid
            .then(|| u32::from_str_radix(digits, 8).ok())
            .flatten()
            .filter(|bits| *bits <= 0o777)
            .ok_or_else(|| {
                format!("expected an octal mode between \"0000\" and \"0777\" such as \"0660\", got {value:?}")
            })?;
        Ok(Self(bits))
    }
}

/// Why a config could not be used; the message names the file and, from the TOML parser, the
/// line and column.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}:\n{message}")]
    Invalid { path: PathBuf, message: String },
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses config text; the error is the parser's report, with line, column and excerpt.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Self =
            toml::from_str(text).map_err(|err| err.to_string().trim_end().to_owned())?;
        if config.devices.allow.len() > MAX_ALLOWED_DEVICES {
            return Err(format!(
                "[devices] allow lists {} devices; at most {MAX_ALLOWED_DEVICES}",
                config.devices.allow.len()
            ));
        }
        crate::protect::name_trie::NameTrie::build(&config.protected_patterns())
            .map_err(|err| format!("[protect] paths: {err}"))?;
        Ok(config)
    }

    /// Every pattern the agent protects: its own state, pin and key directories and the
    /// broker's workload secret (escaped: they are literal paths), then `[protect] paths`.
    pub fn protected_patterns(&self) -> Vec<String> {
        let key_dir = self
            .broker
            .key_dir(self.agent.state_dir.as_path())
            .filter(|_| self.broker.enabled);
        [
            Some(self.agent.state_dir.as_path().to_owned()),
            Some(self.agent.pin_dir.as_path().to_owned()),
            // Outside the state directory only when configured so; protected either way.
            key_dir,
            // The workload issuer's shared secret would let a task forge workload tokens.
            self.broker
                .workload
                .secret_file
                .as_ref()
                .filter(|_| self.broker.enabled)
                .map(|file| file.as_path().to_owned()),
        ]
        .into_iter()
        .flatten()
        .map(|dir| glob::Pattern::escape(&dir.to_string_lossy()))
        .chain(self.protect.paths.iter().map(|p| p.as_str().to_owned()))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_documented_defaults() {
        let config = NodeConfig::parse("").unwrap();
        assert_eq!(
            config.api.socket_path.as_path(),
            Path::new(DEFAULT_SOCKET_PATH)
        );
        assert_eq!(config.api.socket_mode.bits(), 0o666);
        assert_eq!(config.agent.log_level, LogLevel::Info);
        assert_eq!(
            config.agent.state_dir.as_path(),
            Path::new(DEFAULT_STATE_DIR)
        );
        assert_eq!(config.agent.pin_dir.as_path(), Path::new(DEFAULT_PIN_DIR));
        assert_eq!(config.audit.mode, Mode::Enforce);
        assert_eq!(
            config.audit.log_path.as_path(),
            Path::new(DEFAULT_AUDIT_LOG)
        );
        assert_eq!(
            (config.audit.rate_per_sec.get(), config.audit.burst.get()),
            (20, 100)
        );
        assert!(config.protect.paths.is_empty());
        assert!(config.sockets.reachable.is_empty());
        assert_eq!(
            config.protect.rescan_interval_secs.duration().as_secs(),
            DEFAULT_RESCAN_INTERVAL_SECS
        );
    }

    #[test]
    fn example_file_in_repo_parses_and_matches_defaults() {
        let text = include_str!("../../config/node.example.toml");
        let config = NodeConfig::parse(text).unwrap();
        assert_eq!(config, NodeConfig::parse("").unwrap());
    }

    #[test]
    fn unknown_key_is_rejected_with_line_and_expected_keys() {
        let err =
            NodeConfig::parse("[api]\nsocket_path = \"/run/x.sock\"\nsokcet_mode = \"0600\"\n")
                .unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("sokcet_mode"), "{err}");
        assert!(err.contains("socket_mode"), "expected keys listed: {err}");
    }

    #[test]
    fn unknown_section_is_rejected() {
        let err = NodeConfig::parse("[apii]\n").unwrap_err();
        assert!(err.contains("line 1") && err.contains("apii"), "{err}");
    }

    #[test]
    fn relative_socket_path_is_rejected_with_line() {
        let err = NodeConfig::parse("\n[api]\nsocket_path = \"run/x.sock\"\n").unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("absolute path"), "{err}");
    }

    #[test]
    fn dotdot_socket_path_is_rejected() {
        let err = NodeConfig::parse("[api]\nsocket_path = \"/run/../x.sock\"\n").unwrap_err();
        assert!(err.contains("without `..`"), "{err}");
    }

    #[test]
    fn socket_mode_must_be_octal_string() {
        for bad in [
            "\"0999\"",
            "\"rw-rw----\"",
            "\"01777\"",
            "660",
            "\"\"",
            "\"7\"",
        ] {
            let err = NodeConfig::parse(&format!("[api]\nsocket_mode = {bad}\n")).unwrap_err();
            assert!(err.contains("line 2"), "{bad}: {err}");
        }
        for (good, bits) in [
            ("\"0660\"", 0o660),
            ("\"600\"", 0o600),
            ("\"0o640\"", 0o640),
        ] {
            let config = NodeConfig::parse(&format!("[api]\nsocket_mode = {good}\n")).unwrap();
            assert_eq!(config.api.socket_mode.bits(), bits);
        }
    }

    #[test]
    fn bad_log_level_lists_the_choices() {
        let err = NodeConfig::parse("[agent]\nlog_level = \"loud\"\n").unwrap_err();
        assert!(err.contains("line 2") && err.contains("debug"), "{err}");
    }

    #[test]
    fn protected_patterns_are_validated() {
        for (bad, why) in [
            ("\"etc/airflow\"", "absolute"),
            ("\"/etc/../root\"", "without `..`"),
            ("\"/\"", "refusing to protect `/`"),
            ("\"/*\"", "first path component"),
            ("\"/e?c/x\"", "first path component"),
            ("\"/etc/[abc\"", "invalid glob"),
            ("17", "string"),
        ] {
            let err = NodeConfig::parse(&format!("[protect]\npaths = [\"/etc/ok\", {bad}]\n"))
                .unwrap_err();
            assert!(err.contains("line 2"), "{bad}: {err}");
            assert!(err.contains(why), "{bad}: expected {why:?} in {err}");
        }
        let config = NodeConfig::parse(
            "[protect]\npaths = [\"/etc/airflow/airflow.cfg\", \"/srv/keys/*.pem\"]\n",
        )
        .unwrap();
        assert_eq!(config.protect.paths.len(), 2);
        assert_eq!(config.protect.paths[1].as_str(), "/srv/keys/*.pem");
    }

    #[test]
    fn audit_section_is_validated() {
        let config = NodeConfig::parse("[audit]\nmode = \"audit\"\nrate_per_sec = 5\n").unwrap();
        assert_eq!(config.audit.mode, Mode::Audit);
        assert_eq!(config.audit.rate_per_sec.get(), 5);
        for bad in [
            "mode = \"permissive\"",
            "rate_per_sec = 0",
            "burst = 1000001",
            "log_path = \"audit.log\"",
        ] {
            let err = NodeConfig::parse(&format!("[audit]\n{bad}\n")).unwrap_err();
            assert!(err.contains("line 2"), "{bad}: {err}");
        }
    }

    #[test]
    fn handed_over_descriptors_default_to_refused() {
        assert_eq!(
            NodeConfig::parse("")
                .unwrap()
                .protect
                .handed_over_descriptors,
            HandedOverDescriptors::Refuse
        );
        let allow = NodeConfig::parse("[protect]\nhanded_over_descriptors = \"allow\"\n").unwrap();
        assert_eq!(
            allow.protect.handed_over_descriptors,
            HandedOverDescriptors::Allow
        );
        let err = NodeConfig::parse("[protect]\nhanded_over_descriptors = \"yes\"\n").unwrap_err();
        assert!(err.contains("refuse") && err.contains("allow"), "{err}");
    }

    #[test]
    fn allowed_devices_parse_exact_and_every_minor() {
        let config = NodeConfig::parse("[devices]\nallow = [\"10:229\", \"195:*\"]\n").unwrap();
        assert_eq!(
            config.devices.allow,
            [
                CharDevice::exact(10, 229),
                CharDevice {
                    major: 195,
                    minor: None
                }
            ]
        );
        assert_eq!(config.devices.allow[0].map_key(), (10 << 20) | 229);
        assert_eq!(config.devices.allow[1].map_key(), (195 << 20) | 0xf_ffff);
        for bad in [
            "\"10\"",
            "\"10:\"",
            "\":5\"",
            "\"a:b\"",
            "\"4096:1\"",
            "\"1:1048575\"",
            "\"-1:3\"",
            "10",
        ] {
            let err = NodeConfig::parse(&format!("[devices]\nallow = [{bad}]\n")).unwrap_err();
            assert!(format!("{err:#}").contains("allow"), "{bad}: {err:#}");
        }
        assert!(NodeConfig::parse("[devices]\nblock = [\"8:0\"]\n").is_err());
        let many: Vec<String> = (0..=MAX_ALLOWED_DEVICES)
            .map(|m| format!("\"10:{m}\""))
            .collect();
        let err =
            NodeConfig::parse(&format!("[devices]\nallow = [{}]\n", many.join(","))).unwrap_err();
        assert!(err.contains("at most"), "{err}");
    }

    #[test]
    fn reachable_sockets_are_absolute_paths() {
        let config =
            NodeConfig::parse("[sockets]\nreachable = [\"/dev/log\", \"/run/a.sock\"]\n").unwrap();
        assert_eq!(config.sockets.reachable.len(), 2);
        for bad in ["\"log.sock\"", "\"/run/../x\"", "1"] {
            let err = NodeConfig::parse(&format!("[sockets]\nreachable = [{bad}]\n")).unwrap_err();
            assert!(err.contains("line 2"), "{bad}: {err}");
        }
        let err = NodeConfig::parse("[sockets]\nabstract = true\n").unwrap_err();
        assert!(err.contains("abstract"), "{err}");
    }

    #[test]
    fn rescan_interval_is_bounded() {
        for bad in ["0", "3601", "-1", "\"5\""] {
            let err = NodeConfig::parse(&format!("[protect]\nrescan_interval_secs = {bad}\n"))
                .unwrap_err();
            assert!(err.contains("line 2"), "{bad}: {err}");
        }
        let config = NodeConfig::parse("[protect]\nrescan_interval_secs = 60\n").unwrap();
        assert_eq!(config.protect.rescan_interval_secs.duration().as_secs(), 60);
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.toml");
        std::fs::write(&path, "[api]\nbogus = 1\n").unwrap();
        let err = NodeConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        let missing = NodeConfig::load(&dir.path().join("absent.toml"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("absent.toml"), "{missing}");
    }
}
