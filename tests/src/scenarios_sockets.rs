//! Unix sockets across domains: a socket made outside any domain, or in another domain, is
//! refused to a task in a domain for connect and send, abstract and pathname alike; the same
//! access succeeds from outside any domain and within the domain that made the socket. The
//! agent's socket and the configured reachable sockets stay reachable, and connections made
//! before a seal keep working.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use crate::{
    access::Outcome,
    harness::Suite,
    refusal_records::{Names, is_refusal_by, label_for},
    scenarios::{exe, expect, run_helper},
    scenarios_audit::{log_len, wait_for_record},
};

const KINDS: [&str; 3] = ["stream", "seqpacket", "dgram"];
const SOCKET_DIR: &str = "/run/bulkhead-test";
/// In tests/vm/node.toml's `sockets.reachable`.
const REACHABLE_STREAM: &str = "/run/bulkhead-test/reachable-stream.sock";
const REACHABLE_DGRAM: &str = "/run/bulkhead-test/reachable-dgram.sock";

/// Where a socket is named.
#[derive(Clone, Copy)]
enum Namespace {
    Abstract,
    Pathname,
}

impl Namespace {
    fn as_str(self) -> &'static str {
        match self {
            Namespace::Abstract => "abstract",
            Namespace::Pathname => "pathname",
        }
    }

    /// A name unique within the run, so no test meets another's socket.
    fn fresh_name(self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        match self {
            Namespace::Abstract => format!("@bulkhead-test-{n}"),
            Namespace::Pathname => format!("{SOCKET_DIR}/s{n}.sock"),
        }
    }
}

/// Who makes the socket a test reaches for.
#[derive(Clone, Copy)]
enum Maker {
    Outside,
    OtherDomain,
}

/// A helper serving a socket; it stops when dropped (its stdin closes).
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

fn serve(kind: &str, name: &str, maker: Maker) -> Result<Server, String> {
    std::fs::create_dir_all(SOCKET_DIR).map_err(|err| format!("creating {SOCKET_DIR}: {err}"))?;
    let mut cmd = match maker {
        Maker::Outside => Command::new(exe()),
        Maker::OtherDomain => {
            let mut cmd = Command::new("bulkhead");
            cmd.args(["exec", "--label", "socket-maker", "--", &exe()]);
            cmd
        }
    };
    let mut child = cmd
        .args(["helper", "unix-serve", kind, name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|err| format!("starting the socket server: {err}"))?;
    let mut line = String::new();
    let read = BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line);
    let server = Server(child);
    match read {
        Ok(_) if line.trim() == "ready" => Ok(server),
        _ => Err(format!("socket server for {name} printed {line:?}")),
    }
}

fn try_op(
    kind: &'static str,
    op: &'static str,
    namespace: Namespace,
    maker: Maker,
    sealed: bool,
) -> Result<Outcome, String> {
    let name = namespace.fresh_name();
    let _server = serve(kind, &name, maker)?;
    let label = label_for(&format!("unix-{op}-{name}"));
    let offset = log_len();
    let outcome = run_helper(sealed, &label, &["unix-op", op, kind, &name], &[]);
    if sealed && outcome == Outcome::Denied {
        // Stream and seqpacket connects are judged by unix_stream_connect, every datagram
        // (connect on a datagram socket only records the peer) by unix_may_send.
        let expected = [
            ("unix_stream_connect", Names::Socket),
            ("unix_may_send", Names::Socket),
        ];
        wait_for_record(offset, |record| is_refusal_by(record, &label, &expected))?;
    }
    Ok(outcome)
}

pub fn add(suite: &mut Suite<'_>) {
    for kind in KINDS {
        for namespace in [Namespace::Abstract, Namespace::Pathname] {
            let ns = namespace.as_str();
            for op in crate::socket_access::operations(kind) {
                suite.add(
                    format!("deny:unix-{kind}-{ns}-{op}:outside-socket"),
                    move || {
                        expect(
                            try_op(kind, op, namespace, Maker::Outside, true)?,
                            Outcome::Denied,
                        )
                    },
                );
                suite.add(
                    format!("deny:unix-{kind}-{ns}-{op}:other-domain-socket"),
                    move || {
                        expect(
                            try_op(kind, op, namespace, Maker::OtherDomain, true)?,
                            Outcome::Denied,
                        )
                    },
                );
                suite.add(
                    format!("control-outside:unix-{kind}-{ns}-{op}"),
                    move || {
                        expect(
                            try_op(kind, op, namespace, Maker::OtherDomain, false)?,
                            Outcome::Allowed,
                        )
                    },
                );
            }
            suite.add(format!("control-same-domain:unix-{kind}-{ns}"), move || {
                std::fs::create_dir_all(SOCKET_DIR).map_err(|err| err.to_string())?;
                let name = namespace.fresh_name();
                expect(
                    run_helper(true, "socket-same", &["unix-same-domain", kind, &name], &[]),
                    Outcome::Allowed,
                )
            });
        }
    }
    suite.add("control-reachable:unix-agent-socket", || {
        let socket = std::env::var("BULKHEAD_SOCKET")
            .unwrap_or_else(|_| bulkhead::config::DEFAULT_SOCKET_PATH.into());
        expect(
            run_helper(
                true,
                "socket-agent",
                &["unix-op", "connect", "stream", &socket],
                &[],
            ),
            Outcome::Allowed,
        )
    });
    suite.add("control-reachable:unix-configured-stream", || {
        reachable_from_domain("stream", REACHABLE_STREAM, &["connect"])
    });
    suite.add("control-reachable:unix-configured-dgram", || {
        reachable_from_domain("dgram", REACHABLE_DGRAM, &["connect", "send"])
    });
    suite.add("control-handed-over:unix-connected-before-seal", || {
        let name = Namespace::Abstract.fresh_name();
        let _server = serve("dgram", &name, Maker::Outside)?;
        expect(
            run_helper(false, "", &["unix-handed-over", &name], &[]),
            Outcome::Allowed,
        )
    });
    suite.add("audit:unix-denial-recorded", socket_denial_recorded);
}

/// A socket served outside any domain at a configured reachable path: once the agent has
/// marked it (at its next rescan, every 2 s in the VM), a task in a domain reaches it with
/// every operation.
fn reachable_from_domain(kind: &str, path: &str, ops: &[&str]) -> Result<(), String> {
    let _server = serve(kind, path, Maker::Outside)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    for op in ops {
        loop {
            match run_helper(true, "socket-reachable", &["unix-op", op, kind, path], &[]) {
                Outcome::Allowed => break,
                Outcome::Denied if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                other => return Err(format!("{op} {path}: {other:?} after 15 s")),
            }
        }
    }
    Ok(())
}

/// The refusal's record names the hook, the socket's name, and its owner (none).
fn socket_denial_recorded() -> Result<(), String> {
    let offset = log_len();
    let name = Namespace::Abstract.fresh_name();
    let server = serve("stream", &name, Maker::Outside)?;
    let outcome = run_helper(
        true,
        "socket-audited",
        &["unix-op", "connect", "stream", &name],
        &[],
    );
    drop(server);
    expect(outcome, Outcome::Denied)?;
    let record = wait_for_record(offset, |r| {
        r["actor"]["label"] == "socket-audited" && r["hook"] == "unix_stream_connect"
    })?;
    // The record carries the first 15 bytes of the name after the abstract NUL.
    let shown: String = name.chars().take(16).collect();
    if record["socket"]["name"] != shown.as_str() || !record["socket"]["domain"].is_null() {
        return Err(format!("socket fields wrong in {record}"));
    }
    Ok(())
}
