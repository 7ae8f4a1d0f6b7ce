//! The processes of the broker scenarios: a supervisor that registers its child with a workload
//! token and holds the execution token, and the task that tries to take it.

use std::{
    io::{BufRead, Write},
    os::fd::{FromRawFd, OwnedFd},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use bulkhead::api::{
    client::{Client, ClientError},
    wire::{
        IntrospectRequest, IntrospectResponse, MintRequest, MintResponse, PATH_INTROSPECT,
        PATH_JWKS, PATH_TASKS, PATH_TOKENS, PATH_WHOAMI, RegisterRequest, RegisterResponse,
        WhoamiResponse,
    },
};

use crate::{SUPERVISOR_MARKER, access::Outcome, scenarios::exe};

pub(crate) fn client() -> Client {
    Client::new(std::path::Path::new(bulkhead::config::DEFAULT_SOCKET_PATH))
}

/// A child that waits for one line on a pipe, then runs `helper <args> <words of the line>`.
/// Returns its pid and the pipe's write end. Forked from a single-threaded process.
fn spawn_waiting(args: &[&str]) -> (i32, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: this helper is single-threaded (the API client runs on a current-thread runtime),
    // so the child may allocate before exec.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: fds[0] is our read end.
        let read = unsafe { std::fs::File::from(OwnedFd::from_raw_fd(fds[0])) };
        unsafe { libc::close(fds[1]) };
        let mut line = String::new();
        let _ = std::io::BufReader::new(read).read_line(&mut line);
        if line.trim().is_empty() {
            // Released without a go: the registration was refused; report our domain.
            unsafe { libc::_exit(0) };
        }
        let error = Command::new(exe())
            .arg("helper")
            .args(args)
            .args(line.split_whitespace())
            .exec_replacing();
        eprintln!("exec failed: {error}");
        unsafe { libc::_exit(3) };
    }
    unsafe { libc::close(fds[0]) };
    // SAFETY: fds[1] is our write end.
    (pid, unsafe {
        std::fs::File::from(OwnedFd::from_raw_fd(fds[1]))
    })
}

trait ExecReplacing {
    fn exec_replacing(&mut self) -> std::io::Error;
}

impl ExecReplacing for Command {
    fn exec_replacing(&mut self) -> std::io::Error {
        std::os::unix::process::CommandExt::exec(self)
    }
}

fn wait_child(pid: i32) -> Option<i32> {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
}

/// Runs `helper <args>` outside any domain and returns how it ended.
fn unsealed(args: &[&str]) -> Outcome {
    match Command::new(exe())
        .arg("helper")
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(output) => match output.status.code() {
            Some(0) => Outcome::Allowed,
            Some(10) => Outcome::Denied,
            code => Outcome::Error(format!(
                "helper {args:?} exit {code:?}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )),
        },
        Err(err) => Outcome::Error(err.to_string()),
    }
}

/// Registers child `task` with the workload token in `workload` (a file's contents).
pub(crate) fn register(
    workload: &str,
    task: i32,
    label: Option<&str>,
) -> Result<RegisterResponse, ClientError> {
    client().post(
        PATH_TASKS,
        &RegisterRequest {
            workload_token: Some(workload.trim().to_owned()),
            sub: None,
            pid: Some(task),
            label: label.map(str::to_owned),
        },
    )
}

pub(crate) fn introspect(token: &str) -> Result<IntrospectResponse, ClientError> {
    client().post(
        PATH_INTROSPECT,
        &IntrospectRequest {
            token: token.to_owned(),
            scope: None,
        },
    )
}

/// A helper's exit status for a flow: 0 when every step went as a secure broker must, else 1
/// with the failed step on stderr.
pub(crate) fn exit_status(flow: Result<(), String>) -> i32 {
    match flow {
        Ok(()) => 0,
        Err(failure) => {
            eprintln!("{failure}");
            1
        }
    }
}

/// The supervisor's whole flow.
pub fn supervise(token_file: &str) -> i32 {
    exit_status(supervise_steps(token_file))
}

fn supervise_steps(token_file: &str) -> Result<(), String> {
    let workload = std::fs::read_to_string(token_file).map_err(|e| e.to_string())?;
    let me = std::process::id().to_string();
    let (task, mut release) = spawn_waiting(&["task-checks", &me]);
    let domain = register(&workload, task, Some("airflow.ti"))
        .map_err(|err| format!("register: {err}"))?
        .domain
        .ok_or("registered with a pid, but no domain")?;
    let minted: MintResponse = client()
        .post(
            PATH_TOKENS,
            &MintRequest {
                domain: Some(domain),
                sub: None,
            },
        )
        .map_err(|err| format!("mint as owner: {err}"))?;
    let token = minted.token;
    if !introspect(&token).map_err(|e| e.to_string())?.active {
        return Err("a freshly minted token is not active".into());
    }
    // The token's last 16 bytes (signature: unguessable) and where they are in our memory.
    let tail = &token[token.len() - 16..];
    let addr = format!("{:x}", token.as_ptr() as u64 + token.len() as u64 - 16);
    // Control: outside any domain, the same read finds the token, so the address is right.
    let control = unsealed(&["probe", "proc-mem", &me, &addr, tail, SUPERVISOR_MARKER]);
    if control != Outcome::Allowed {
        return Err(format!(
            "control read of the token from outside: {control:?}"
        ));
    }
    // Another process outside any domain, same uid, is not the owner.
    let stranger = unsealed(&["mint-for", &domain.to_string()]);
    if stranger != Outcome::Denied {
        return Err(format!("a non-owner's mint: {stranger:?}"));
    }
    writeln!(release, "{domain} {addr} {tail}").map_err(|e| e.to_string())?;
    drop(release);
    match wait_child(task) {
        Some(0) => {}
        other => return Err(format!("the task's checks failed (exit {other:?})")),
    }
    // The task was the domain's only process: its exit ends the domain and revokes the token.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = introspect(&token).map_err(|e| e.to_string())?;
        if !answer.active {
            let reason = answer.reason.unwrap_or_default();
            return if reason.contains("domain_ended") {
                Ok(())
            } else {
                Err(format!("token inactive for the wrong reason: {reason}"))
            };
        }
        if Instant::now() > deadline {
            return Err("the token stayed active after its domain ended".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Inside the registered domain: every way to the supervisor's token fails, while the API
/// itself answers (JWKS, whoami).
pub fn task_checks(sup: &str, domain: &str, addr: &str, tail: &str) -> i32 {
    let mut failures = Vec::new();
    let mut check = |what: &str, ok: bool, detail: String| {
        if !ok {
            failures.push(format!("{what}: {detail}"));
        }
    };
    match client().get::<WhoamiResponse>(PATH_WHOAMI) {
        Ok(who) => check(
            "sealed into the registered domain",
            who.domain.map(|d| d.to_string()).as_deref() == Some(domain),
            format!("{:?}", who.domain),
        ),
        Err(err) => check("whoami", false, err.to_string()),
    }
    let target = crate::access::Target {
        pid: sup.parse().expect("pid"),
        addr: u64::from_str_radix(addr, 16).expect("hex"),
        expect_mem: Some(tail.as_bytes().to_vec()),
        env_marker: SUPERVISOR_MARKER.to_owned(),
    };
    for access in [
        crate::access::Access::ProcMem,
        crate::access::Access::ProcessVmReadv,
        crate::access::Access::ProcEnviron,
        crate::access::Access::PtraceAttach,
    ] {
        let outcome = crate::access::attempt(access, &target);
        check(
            access.name(),
            outcome == Outcome::Denied,
            format!("{outcome:?}"),
        );
    }
    let refused = |result: Result<MintResponse, ClientError>| match result {
        Err(ClientError::Refused { code, .. }) => code == "forbidden",
        _ => false,
    };
    check(
        "mint for own domain",
        refused(client().post(PATH_TOKENS, &MintRequest::default())),
        "not refused".into(),
    );
    check(
        "mint naming the domain",
        refused(client().post(
            PATH_TOKENS,
            &MintRequest {
                domain: domain.parse().ok(),
                sub: None,
            },
        )),
        "not refused".into(),
    );
    let register: Result<RegisterResponse, _> = client().post(
        PATH_TASKS,
        &RegisterRequest {
            workload_token: None,
            sub: Some("x".into()),
            pid: Some(1),
            label: None,
        },
    );
    check(
        "register from inside a domain",
        matches!(&register, Err(ClientError::Refused { code, .. }) if code == "forbidden"),
        format!("{:?}", register.map(|r| r.domain)),
    );
    match client().get::<serde_json::Value>(PATH_JWKS) {
        Ok(jwks) => check(
            "JWKS readable (control)",
            jwks["keys"].as_array().is_some_and(|k| !k.is_empty()),
            jwks.to_string(),
        ),
        Err(err) => check("JWKS readable (control)", false, err.to_string()),
    }
    if failures.is_empty() {
        0
    } else {
        eprintln!("{}", failures.join("; "));
        1
    }
}

/// Outside any domain but not the owner: the mint must be refused.
pub fn mint_for(domain: &str) -> i32 {
    let result: Result<MintResponse, _> = client().post(
        PATH_TOKENS,
        &MintRequest {
            domain: domain.parse().ok(),
            sub: None,
        },
    );
    match result {
        Err(ClientError::Refused { code, .. }) if code == "forbidden" => 10,
        Ok(_) => 0,
        Err(err) => {
            eprintln!("{err}");
            2
        }
    }
}

/// Registration with a token the broker must refuse: the child stays unsealed.
pub fn register_refused(token_file: &str, expected_code: &str) -> i32 {
    let workload = std::fs::read_to_string(token_file).expect("token file");
    let (task, release) = spawn_waiting(&["never-run"]);
    let result = register(&workload, task, None);
    drop(release);
    wait_child(task);
    match result {
        Err(ClientError::Refused { code, .. }) if code == expected_code => 10,
        Ok(registered) => {
            eprintln!("registered into domain {:?}", registered.domain);
            0
        }
        Err(err) => {
            eprintln!("unexpected refusal: {err}");
            2
        }
    }
}

/// A first latency figure over the socket: median round trips of mint and introspect, next to
/// a status request in the same boot (under TCG only the ratios mean anything).
pub fn bench(token_file: &str, rounds: &str) -> i32 {
    match bench_rounds(token_file, rounds.parse().unwrap_or(50)) {
        Ok(line) => {
            println!("{line}");
            0
        }
        Err(err) => {
            eprintln!("{err}");
            1
        }
    }
}

fn bench_rounds(token_file: &str, rounds: usize) -> Result<String, String> {
    use bulkhead::api::wire::{
        PATH_REVOKE, PATH_STATUS, RevokeRequest, RevokeResponse, StatusResponse,
    };
    let workload = std::fs::read_to_string(token_file).map_err(|e| e.to_string())?;
    let (task, release) = spawn_waiting(&["never-run"]);
    let domain = register(&workload, task, Some("bench"))
        .map_err(|err| format!("register: {err}"))?
        .domain
        .ok_or("registered with a pid, but no domain")?;
    let timed = |f: &mut dyn FnMut() -> Result<(), String>| -> Result<Duration, String> {
        let start = Instant::now();
        f()?;
        Ok(start.elapsed())
    };
    let (mut status, mut mint, mut verify) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        status.push(timed(&mut || {
            client()
                .get::<StatusResponse>(PATH_STATUS)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })?);
        let mut token = String::new();
        mint.push(timed(&mut || {
            token = client()
                .post::<_, MintResponse>(
                    PATH_TOKENS,
                    &MintRequest {
                        domain: Some(domain),
                        sub: None,
                    },
                )
                .map_err(|e| e.to_string())?
                .token;
            Ok(())
        })?);
        verify.push(timed(&mut || {
            introspect(&token).map(|_| ()).map_err(|e| e.to_string())
        })?);
        // Untimed: lets the next mint through the one-fresh-token rule.
        client()
            .post::<_, RevokeResponse>(
                PATH_REVOKE,
                &RevokeRequest {
                    jti: None,
                    domain: Some(domain),
                },
            )
            .map_err(|e| e.to_string())?;
    }
    drop(release);
    wait_child(task);
    let median = |samples: &mut Vec<Duration>| {
        samples.sort();
        samples[samples.len() / 2]
    };
    let (status, mint, verify) = (median(&mut status), median(&mut mint), median(&mut verify));
    let ratio = |d: Duration| d.as_secs_f64() / status.as_secs_f64();
    Ok(format!(
        "broker latency over the socket, median of {rounds} (TCG; ratios to a status request): \
         status {status:?}, mint {mint:?} ({:.1}x), introspect {verify:?} ({:.1}x)",
        ratio(mint),
        ratio(verify)
    ))
}
