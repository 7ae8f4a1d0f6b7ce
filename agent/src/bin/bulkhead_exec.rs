//! `bulkhead-exec`: `bulkhead exec` as a binary of its own, for the path every task start
//! takes. Same options, same environment variables, same exit statuses; see exec.rs for what
//! it does and in which order.
//!
//! Why a second binary: the full CLI links the agent (BPF loading, signing, the state
//! database), and starting it is mostly the dynamic loader relocating all that, then clap
//! building every subcommand, before one request is sent. This one links the client and the
//! seal only, parses its few options with lexopt, and skips std's main-thread set-up
//! (`#![no_main]`), whose stack-guard probe reads /proc/self/maps.
#![no_main]

use std::{ffi::OsString, path::PathBuf};

use bulkhead::{
    config::DEFAULT_SOCKET_PATH,
    exec::{EXIT_BULKHEAD_FAILED, seal_and_exec},
};

const USAGE: &str =
    "usage: bulkhead-exec [--label NAME | --registration ID] [--socket PATH] -- CMD [ARGS...]";

struct Options {
    label: Option<String>,
    registration: Option<String>,
    socket: PathBuf,
    command: Vec<OsString>,
}

/// Options before `--`, the command after it (as `bulkhead exec` takes them).
fn parse(args: Vec<OsString>) -> Result<Options, String> {
    use lexopt::prelude::*;
    let Some(split) = args.iter().position(|arg| arg == "--") else {
        return Err("no `--` before the command".into());
    };
    let command = args[split + 1..].to_vec();
    let mut registration_given = false;
    let mut options = Options {
        label: None,
        registration: std::env::var("BULKHEAD_REGISTRATION").ok(),
        socket: std::env::var_os("BULKHEAD_SOCKET")
            .map_or_else(|| PathBuf::from(DEFAULT_SOCKET_PATH), PathBuf::from),
        command,
    };
    let mut parser = lexopt::Parser::from_args(args[..split].iter().cloned());
    let utf8 = |value: OsString, name: &str| {
        value
            .into_string()
            .map_err(|_| format!("--{name} must be UTF-8"))
    };
    while let Some(arg) = parser.next().map_err(|err| err.to_string())? {
        match arg {
            Long("label") => {
                options.label = Some(utf8(parser.value().map_err(|e| e.to_string())?, "label")?);
            }
            Long("registration") => {
                registration_given = true;
                options.registration = Some(utf8(
                    parser.value().map_err(|e| e.to_string())?,
                    "registration",
                )?);
            }
            Long("socket") => {
                options.socket = parser.value().map_err(|e| e.to_string())?.into();
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    if options.label.is_some() && registration_given {
        return Err("--label and --registration exclude each other".into());
    }
    if options.command.is_empty() {
        return Err("no command given after `--`".into());
    }
    Ok(options)
}

#[unsafe(no_mangle)]
pub extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    match parse(std::env::args_os().skip(1).collect()) {
        Ok(options) => seal_and_exec(
            &options.socket,
            options.label,
            options.registration,
            &options.command,
        ),
        Err(err) => {
            eprintln!("bulkhead-exec: {err}\n{USAGE}");
            EXIT_BULKHEAD_FAILED
        }
    }
}
