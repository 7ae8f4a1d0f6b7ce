//! The `bulkhead` command: the agent (`run`) and its local clients.

use std::{ffi::OsString, path::PathBuf, process::ExitCode};

use bulkhead::keys::material::SigningAlgorithm;
use bulkhead::{
    api::{
        client::Client,
        wire::{
            DomainsResponse, PATH_DOMAINS, PATH_STATUS, PATH_WHOAMI, StatusResponse, WhoamiResponse,
        },
    },
    config::{DEFAULT_CONFIG_PATH, DEFAULT_SOCKET_PATH, NodeConfig},
    daemon, exec,
};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bulkhead",
    version,
    about = "Kernel-enforced task domains for task-runner worker hosts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: check the host, load the LSM programs, serve the local socket.
    Run {
        /// Per-node configuration file (TOML).
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Validate a node configuration file and print the effective settings; changes nothing.
    CheckConfig {
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Seal this process into a new domain, then execute CMD inside it.
    ///
    /// CMD runs only if the agent sealed the process. Exit status: CMD's own, or 125 if bulkhead
    /// failed (agent unreachable or refused), 126 if CMD could not be executed, 127 if not found.
    Exec {
        /// Human-readable name for the domain, shown in the agent's logs.
        #[arg(long, conflicts_with = "registration")]
        label: Option<String>,
        /// Join the task the parent registered with the token broker (POST /v1/tasks without
        /// a pid): the domain is bound to that task and its supervisor may mint for it.
        #[arg(long, env = "BULKHEAD_REGISTRATION", value_name = "ID")]
        registration: Option<String>,
        #[arg(long, env = "BULKHEAD_SOCKET", default_value = DEFAULT_SOCKET_PATH)]
        socket: PathBuf,
        #[arg(required = true, last = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
    /// Show the agent's status (pid, attached hooks, open domains).
    Status {
        #[arg(long, env = "BULKHEAD_SOCKET", default_value = DEFAULT_SOCKET_PATH)]
        socket: PathBuf,
    },
    /// Remove bulkhead from the kernel: unpin and detach every program and drop the pinned
    /// maps (all domains and protected-file marks). Refused while an agent is running.
    Uninstall {
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Show each hook's prototype on this kernel (or in the BTF file given) and where the
    /// programs would find their arguments; lists every hook the kernel lacks or whose
    /// prototype gives no unique answer, and exits 1 then. Loads nothing.
    Hooks {
        /// A kernel BTF file instead of the running kernel's.
        #[arg(long, default_value = bulkhead::enforce::kernel_layout::KERNEL_BTF)]
        btf: PathBuf,
    },
    /// Show the domain this process is in, as the agent reads it from the kernel.
    Whoami {
        #[arg(long, env = "BULKHEAD_SOCKET", default_value = DEFAULT_SOCKET_PATH)]
        socket: PathBuf,
    },
    /// The node's domains (operators only: refused to a process inside a domain).
    Domains {
        #[command(subcommand)]
        command: DomainsCommand,
    },
    /// Signing keys: create one, show one, list or rotate the broker's key directory.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The token broker's tokens: mint (as a domain's supervisor), introspect, revoke, list
    /// revocations, show the JWKS.
    Token {
        #[arg(long, env = "BULKHEAD_SOCKET", default_value = DEFAULT_SOCKET_PATH, global = true)]
        socket: PathBuf,
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Mint an execution token for DOMAIN (only its registering supervisor may) and print it
    /// with its jti and expiry as JSON.
    Mint {
        #[arg(long)]
        domain: u64,
    },
    /// Check a token read from standard input (never from the command line, which other
    /// processes can read): signature, claims, issued here, not revoked.
    Introspect {
        /// The scope the token must have.
        #[arg(long, default_value = "execution")]
        scope: String,
    },
    /// Revoke one token by jti, or every token of a domain.
    Revoke {
        #[arg(long, conflicts_with = "domain", required_unless_present = "domain")]
        jti: Option<String>,
        #[arg(long)]
        domain: Option<u64>,
    },
    /// Revoked tokens that have not expired yet.
    Revoked,
    /// The broker's public keys (JWKS) for remote validators.
    Jwks,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a new key file (mode 0600; an existing file is never replaced) and print its kid.
    Generate {
        /// EdDSA (Ed25519, the default), RS256, RS512 or HS512 (a 64-byte shared secret).
        #[arg(long, default_value = "EdDSA")]
        algorithm: SigningAlgorithm,
        /// RSA modulus size: 2048, 3072 or 4096.
        #[arg(long, default_value_t = 3072)]
        rsa_bits: u32,
        #[arg(long)]
        out: PathBuf,
    },
    /// Read a key file as the agent would (owner and mode checked) and print its kid and public
    /// JWK. Never prints secret material.
    Show {
        #[arg(long, default_value = "EdDSA")]
        algorithm: SigningAlgorithm,
        file: PathBuf,
    },
    /// The broker's keys with their roles (next, signing, retired, expired).
    List {
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Add a new signing key to the broker's key directory: published at once, signing after
    /// publish_lead_secs; expired keys are deleted. The running agent follows by itself.
    Rotate {
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Print the JWKS of the broker's published keys (next, signing, retired), read from its key
    /// directory as the agent reads it: what an API server must trust for this node.
    ExportJwks {
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// Combine the JWKS files of a fleet's nodes into one (the file Airflow's
    /// [api_auth] trusted_jwks_url serves). Refuses keys without kid, private or shared keys,
    /// and one kid for two different keys.
    CombineJwks {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum DomainsCommand {
    /// List the live domains with their labels, oldest first.
    List {
        #[arg(long, env = "BULKHEAD_SOCKET", default_value = DEFAULT_SOCKET_PATH)]
        socket: PathBuf,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run { config } => run_agent(&config),
        Command::CheckConfig { config } => match NodeConfig::load(&config) {
            Ok(config) => {
                let files = bulkhead::broker::runtime::check(
                    &config.broker,
                    config.agent.state_dir.as_path(),
                );
                if let Err(err) = files {
                    eprintln!("bulkhead: {err:#}");
                    return ExitCode::from(2);
                }
                println!("{config:#?}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("bulkhead: {err}");
                ExitCode::from(2)
            }
        },
        Command::Exec {
            label,
            registration,
            socket,
            command,
        } => ExitCode::from(exec::seal_and_exec(&socket, label, registration, &command) as u8),
        Command::Status { socket } => print_response::<StatusResponse>(&socket, PATH_STATUS),
        Command::Whoami { socket } => print_response::<WhoamiResponse>(&socket, PATH_WHOAMI),
        Command::Uninstall { config } => uninstall(&config),
        Command::Hooks { btf } => hooks(&btf),
        Command::Domains {
            command: DomainsCommand::List { socket },
        } => print_response::<DomainsResponse>(&socket, PATH_DOMAINS),
        Command::Keys { command } => match keys_command(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("bulkhead: {err:#}");
                ExitCode::FAILURE
            }
        },
        Command::Token { socket, command } => token_command(&socket, command),
    }
}

fn token_command(socket: &std::path::Path, command: TokenCommand) -> ExitCode {
    use bulkhead::api::wire::{
        IntrospectRequest, IntrospectResponse, MintRequest, MintResponse, PATH_INTROSPECT,
        PATH_JWKS, PATH_REVOKE, PATH_REVOKED, PATH_TOKENS, RevocationsResponse, RevokeRequest,
        RevokeResponse,
    };
    let client = Client::new(socket);
    let printed = |result: Result<serde_json::Value, _>| match result {
        Ok(value) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&value).expect("serializable")
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("bulkhead: {err}");
            ExitCode::from(exec::EXIT_BULKHEAD_FAILED as u8)
        }
    };
    match command {
        TokenCommand::Mint { domain } => printed(
            client
                .post::<_, MintResponse>(
                    PATH_TOKENS,
                    &MintRequest {
                        domain: Some(domain),
                        sub: None,
                    },
                )
                .map(|r| as_json(&r)),
        ),
        TokenCommand::Introspect { scope } => {
            let scope = match scope.as_str() {
                "execution" => bulkhead::broker::claims::Scope::Execution,
                "workload" => bulkhead::broker::claims::Scope::Workload,
                other => {
                    eprintln!("bulkhead: --scope is execution or workload, not {other:?}");
                    return ExitCode::from(2);
                }
            };
            let mut token = zeroize::Zeroizing::new(String::new());
            if let Err(err) = std::io::stdin().read_line(&mut token) {
                eprintln!("bulkhead: reading the token from standard input: {err}");
                return ExitCode::from(2);
            }
            let request = IntrospectRequest {
                token: token.trim().to_owned(),
                scope: Some(scope),
            };
            printed(
                client
                    .post::<_, IntrospectResponse>(PATH_INTROSPECT, &request)
                    .map(|r| as_json(&r)),
            )
        }
        TokenCommand::Revoke { jti, domain } => printed(
            client
                .post::<_, RevokeResponse>(PATH_REVOKE, &RevokeRequest { jti, domain })
                .map(|r| as_json(&r)),
        ),
        TokenCommand::Revoked => printed(
            client
                .get::<RevocationsResponse>(PATH_REVOKED)
                .map(|r| as_json(&r)),
        ),
        TokenCommand::Jwks => printed(client.get::<serde_json::Value>(PATH_JWKS)),
    }
}

/// Any response as a JSON value, for printing.
fn as_json<T: serde::Serialize>(response: &T) -> serde_json::Value {
    serde_json::to_value(response).expect("API types always serialize")
}

/// Reads and validates the node config; on failure prints why and gives exit status 2.
fn load_config(path: &std::path::Path) -> Result<NodeConfig, ExitCode> {
    NodeConfig::load(path).map_err(|err| {
        eprintln!("bulkhead: {err}");
        ExitCode::from(2)
    })
}

fn uninstall(config_path: &std::path::Path) -> ExitCode {
    let config = match load_config(config_path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Err(err) =
        bulkhead::api::server::ensure_no_agent_serving(config.api.socket_path.as_path())
    {
        eprintln!(
            "bulkhead: {err}; stop it first (it would keep enforcing and re-pin at its next start)"
        );
        return ExitCode::FAILURE;
    }
    let pins = bulkhead::enforce::pins::PinDir::new(config.agent.pin_dir.as_path());
    match pins.remove_all() {
        Ok((links, maps)) => {
            println!(
                "bulkhead: removed {links} pinned program links and {maps} pinned maps from {}; no domain is enforced any more",
                pins.root().display()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("bulkhead: uninstall stopped part-way: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn hooks(btf: &std::path::Path) -> ExitCode {
    use bulkhead::enforce::hook_abi;
    use bulkhead_common::hook_abi::HOOK_ARGS;
    let prototypes = match btf_rs::Btf::from_file(btf)
        .map_err(anyhow::Error::from)
        .and_then(|btf| hook_abi::prototypes_from_btf(&btf))
    {
        Ok(prototypes) => prototypes,
        Err(err) => {
            eprintln!(
                "bulkhead: reading hook prototypes from {}: {err:#}",
                btf.display()
            );
            return ExitCode::FAILURE;
        }
    };
    match hook_abi::resolve(&prototypes) {
        Ok(slots) => {
            for (hook, _) in hook_abi::hooks() {
                let proto = &prototypes[hook];
                let found: Vec<String> = HOOK_ARGS
                    .iter()
                    .enumerate()
                    .filter(|(_, arg)| arg.hook == hook)
                    .map(|(id, arg)| format!("{}={}", describe(&arg.param), slots.slots[id]))
                    .collect();
                let tested = if slots.untested.contains(proto) {
                    " (untested prototype)"
                } else {
                    ""
                };
                println!("{proto}{tested}\n    slots: {}", found.join(", "));
            }
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprintln!("bulkhead: {problems}");
            ExitCode::FAILURE
        }
    }
}

fn describe(param: &bulkhead_common::hook_abi::Param) -> String {
    use bulkhead_common::hook_abi::Param;
    match param {
        Param::StructPtr {
            ty,
            name: Some(name),
        } => format!("{name} (struct {ty} *)"),
        Param::StructPtr { ty, name: None } => format!("struct {ty} *"),
        Param::Integer { name } => (*name).to_owned(),
        Param::Verdict => "verdict".to_owned(),
    }
}

fn keys_command(command: KeysCommand) -> anyhow::Result<()> {
    use bulkhead::keys::{file, generate, material::SigningKey};
    match command {
        KeysCommand::List { ref config } | KeysCommand::Rotate { ref config } => {
            let rotate = matches!(command, KeysCommand::Rotate { .. });
            let config = NodeConfig::load(config)?;
            let broker = &config.broker;
            let dir = broker
                .key_dir(config.agent.state_dir.as_path())
                .ok_or_else(|| anyhow::anyhow!("the broker's key comes from an environment variable (key_env); there is no key directory to rotate"))?;
            let schedule = bulkhead::broker::runtime::schedule(broker);
            let now = bulkhead::broker::service::now();
            let keys = if rotate {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&dir)?;
                bulkhead::keys::admin::rotate(&dir, broker.algorithm, now, schedule)?
            } else {
                bulkhead::keys::admin::list(&dir, broker.algorithm, now, schedule)?
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&keys).expect("serializable")
            );
            return Ok(());
        }
        KeysCommand::ExportJwks { config } => {
            let config = NodeConfig::load(&config)?;
            let broker = &config.broker;
            if broker.algorithm.is_symmetric() {
                anyhow::bail!(
                    "an HS512 broker publishes no keys: the API server verifies with the shared \
                     secret ([api_auth] jwt_secret)"
                );
            }
            let dir = broker
                .key_dir(config.agent.state_dir.as_path())
                .ok_or_else(|| anyhow::anyhow!("the broker's key comes from an environment variable (key_env); ask the running agent: bulkhead token jwks"))?;
            let keyring = bulkhead::keys::keyring::load_dir(
                &dir,
                broker.algorithm,
                bulkhead::broker::service::now(),
                bulkhead::broker::runtime::schedule(broker),
            )?;
            println!(
                "{}",
                serde_json::to_string_pretty(&keyring.jwks()).expect("serializable")
            );
            return Ok(());
        }
        KeysCommand::CombineJwks { files } => {
            let mut sets = Vec::new();
            for file in &files {
                let bytes = std::fs::read(file)
                    .map_err(|err| anyhow::anyhow!("reading {}: {err}", file.display()))?;
                sets.push((file.display().to_string(), bytes));
            }
            let combined = bulkhead::keys::fleet_jwks::combine(&sets)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&combined).expect("serializable")
            );
            return Ok(());
        }
        KeysCommand::Generate {
            algorithm,
            rsa_bits,
            out,
        } => {
            let material = generate::generate(algorithm, rsa_bits)?;
            // Parsed back before writing, so a file is only ever written with a usable key.
            let key = SigningKey::parse(material.as_bytes(), algorithm)?;
            generate::write_new(&out, material.as_bytes())?;
            println!(
                "{}",
                serde_json::json!({"file": out, "algorithm": algorithm, "kid": key.kid()})
            );
        }
        KeysCommand::Show { algorithm, file } => {
            let contents = file::read_private(&file)?;
            let key = SigningKey::parse(&contents, algorithm)
                .map_err(|err| anyhow::anyhow!("{}: {err}", file.display()))?;
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "algorithm": algorithm,
                    "kid": key.kid(),
                    "jwk": key.public_jwk(),
                }))
                .expect("serializable")
            );
        }
    }
    Ok(())
}

fn run_agent(config_path: &std::path::Path) -> ExitCode {
    // Nothing is loaded or bound until the whole config has been read and validated.
    let config = match load_config(config_path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    init_logging(config.agent.log_level.as_str());
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(daemon::run(config, config_path.to_owned())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Log files and journald get plain text; colours only on a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn print_response<R: serde::de::DeserializeOwned + serde::Serialize>(
    socket: &std::path::Path,
    path: &str,
) -> ExitCode {
    match Client::new(socket).get::<R>(path) {
        Ok(response) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&response).expect("serializable")
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("bulkhead: {err}");
            ExitCode::from(exec::EXIT_BULKHEAD_FAILED as u8)
        }
    }
}
