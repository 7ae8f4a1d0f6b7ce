//! The processes of the `bulkhead exec --registration` scenario: a supervisor registers a task
//! without a pid and starts it through `bulkhead exec`; only its own child may take the
//! registration, once.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
};

use bulkhead::api::{
    client::ClientError,
    wire::{
        MintRequest, MintResponse, PATH_SEAL_SELF, PATH_TASKS, PATH_TOKENS, RegisterRequest,
        RegisterResponse, SealSelfRequest, SealSelfResponse,
    },
};

use crate::{
    access::{self, Access, Outcome},
    broker_helpers::{client, exit_status},
    helper::{supervisor_target, whoami},
    scenarios::exe,
};

/// The supervisor's flow.
pub fn supervise_exec(token_file: &str) -> i32 {
    exit_status(supervise_exec_steps(token_file))
}

fn supervise_exec_steps(token_file: &str) -> Result<(), String> {
    let workload = std::fs::read_to_string(token_file).map_err(|e| e.to_string())?;
    let me = std::process::id().to_string();
    let answer: RegisterResponse = client()
        .post(
            PATH_TASKS,
            &RegisterRequest {
                workload_token: Some(workload.trim().to_owned()),
                sub: None,
                pid: None,
                label: Some("airflow.exec".into()),
            },
        )
        .map_err(|err| format!("register without pid: {err}"))?;
    if let Some(domain) = answer.domain {
        return Err(format!("domain {domain} opened before any process asked"));
    }
    let id = answer.registration.ok_or("no registration id")?;

    // A grandchild (its parent is sh, our child) presenting the id is refused...
    let grandchild = Command::new("/bin/sh")
        .args(["-c", "\"$0\" helper take-registration \"$1\"; exit $?"])
        .arg(exe())
        .arg(&id)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if grandchild.status.code() != Some(10) {
        return Err(format!(
            "a grandchild taking the registration: exit {:?}: {}",
            grandchild.status.code(),
            String::from_utf8_lossy(&grandchild.stderr).trim()
        ));
    }

    // ... and the registration is still there for our child, started through bulkhead exec.
    let mut task = Command::new("bulkhead")
        .args(["exec", "--registration", &id, "--"])
        .arg(exe())
        .args(["helper", "registered-task", &me])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(task.stdout.take().ok_or("no stdout")?)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let domain: u64 = line
        .trim()
        .parse()
        .map_err(|_| format!("the task did not report its domain (said {line:?})"))?;
    // The domain is the registered task's, owned by this supervisor: it mints for it.
    let minted: MintResponse = client()
        .post(
            PATH_TOKENS,
            &MintRequest {
                domain: Some(domain),
                sub: None,
            },
        )
        .map_err(|err| format!("mint for the exec'd task's domain: {err}"))?;
    if minted.domain != domain {
        return Err(format!("minted for {} instead of {domain}", minted.domain));
    }

    // Spent: another child of ours presenting it gets nothing, and its command never runs.
    let again = Command::new("bulkhead")
        .args(["exec", "--registration", &id, "--", "/bin/true"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if again.status.code() != Some(bulkhead::exec::EXIT_BULKHEAD_FAILED) {
        return Err(format!(
            "a second use of the registration: exit {:?}",
            again.status.code()
        ));
    }

    let mut stdin = task.stdin.take().ok_or("no stdin")?;
    writeln!(stdin, "done").map_err(|e| e.to_string())?;
    drop(stdin);
    match task.wait().map_err(|e| e.to_string())?.code() {
        Some(0) => Ok(()),
        other => Err(format!("the exec'd task ended with {other:?}")),
    }
}

/// Presents registration `id` to be sealed: 0 sealed, 10 refused as forbidden, 2 otherwise.
pub fn take_registration(id: &str) -> i32 {
    let result: Result<SealSelfResponse, _> = client().post(
        PATH_SEAL_SELF,
        &SealSelfRequest {
            label: None,
            registration: Some(id.to_owned()),
        },
    );
    match result {
        Err(ClientError::Refused { code, .. }) if code == "forbidden" => 10,
        Ok(sealed) => {
            eprintln!("sealed into domain {}", sealed.domain);
            0
        }
        Err(err) => {
            eprintln!("{err}");
            2
        }
    }
}

/// Run by `bulkhead exec --registration`: in a domain, refused the supervisor's environ;
/// prints the domain, then waits for the supervisor's word before exiting.
pub fn registered_task(sup: &str) -> i32 {
    let domain = match whoami() {
        Ok(Some(domain)) => domain,
        other => {
            eprintln!("the exec'd task is not in a domain: {other:?}");
            return 1;
        }
    };
    let environ = access::attempt(
        Access::ProcEnviron,
        &supervisor_target(sup.parse().expect("pid")),
    );
    if environ != Outcome::Denied {
        eprintln!("reading the supervisor's environ from the task: {environ:?}");
        return 1;
    }
    println!("{domain}");
    std::io::stdout().flush().expect("stdout");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    0
}
