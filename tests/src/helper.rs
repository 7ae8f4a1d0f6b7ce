//! `bulkhead-vm-suite helper ...`: the processes the suite starts, inside or outside domains.
//! Each reports by exit status (see `access::Outcome::exit_code`) and explains on stderr.

use std::io::{Read, Write};

use bulkhead::api::{
    client::{Client, ClientError},
    wire::{
        DomainsResponse, PATH_DOMAINS, PATH_SEAL_SELF, PATH_WHOAMI, SealSelfRequest,
        SealSelfResponse, WhoamiResponse,
    },
};

use crate::{
    access::{self, Access, Outcome, Target, cstring},
    broker_exec_helpers, broker_helpers, domain_helpers, file_access, ipc_access, kernel_access,
    key_access, perf_access, shm_access, signal_access, socket_access, tty_access,
};

/// Bytes every process of this binary holds at a known address, for memory-read checks.
#[used]
pub static SECRET: [u8; 16] = *b"bulkhead-secret!";

pub fn secret_addr() -> u64 {
    std::hint::black_box(&SECRET).as_ptr() as u64
}

pub const EXIT_OK: i32 = 0;
pub const EXIT_WRONG: i32 = 1;

pub fn main(args: &[String]) -> i32 {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["probe", access, pid, addr, expect, marker] => probe(access, pid, addr, expect, marker),
        ["traceme"] => report(access::ptrace_traceme()),
        ["same-domain", access] => same_domain(access),
        ["same-domain-traceme"] => same_domain_traceme(),
        ["hold"] => hold(),
        ["inherit", method, sup] => inherit(method, sup),
        ["inherited-check", sup, expected] => inherited_check(sup, expected),
        ["seal-multithreaded"] => seal_multithreaded(),
        ["reseal"] => reseal(),
        ["file", op, args @ ..] => report(file_access::attempt(op, args)),
        ["signal", op, pid] => report(signal_access::attempt(op, pid.parse().expect("pid"))),
        ["same-domain-signal", op] => same_domain_signal(op),
        ["sigio-target"] => {
            signal_access::block_sigio_signal();
            hold()
        }
        ["sigchld-parent"] => sigchld_parent(),
        ["kernel", op] => report(kernel_access::attempt(op)),
        ["tty", op] => report(tty_access::attempt(op)),
        ["device", op] => report(crate::device_access::attempt(op)),
        ["device-open", path] => report(crate::device_access::open_device(path)),
        ["read-loop", path, stop] => crate::race_access::read_loop(path, stop),
        ["read-matching-loop", dir, suffix, stop] => {
            crate::race_access::read_matching_loop(dir, suffix, stop)
        }
        ["read-nested-loop", base, leaf, stop] => {
            crate::race_access::read_nested_loop(base, leaf, stop)
        }
        ["link-then-read", staging, links, stop] => {
            crate::race_access::link_then_read(staging, links, stop)
        }
        ["held-fd", fd, op] => report(crate::descriptor_access::held(fd.parse().expect("fd"), op)),
        ["received-fd", fd] => report(crate::descriptor_access::received(fd.parse().expect("fd"))),
        ["fanotify-event-opened", fd] => report(crate::descriptor_access::fanotify_event_opened(
            fd.parse().expect("fd"),
        )),
        ["fanotify-event", fd] => report(crate::descriptor_access::fanotify_event(
            fd.parse().expect("fd"),
        )),
        ["perf", pid, cpu] => report(perf_access::attempt(
            pid.parse().expect("pid"),
            cpu.parse().expect("cpu"),
        )),
        ["attack-loop", sup, stop_file] => attack_loop(sup, stop_file),
        ["busy-attacker", sup, stop_file] => crate::scenarios_lookup::busy_attacker(sup, stop_file),
        ["flood", count] => flood(count),
        ["linger", go_file] => domain_helpers::linger(go_file),
        ["fork-fail"] => domain_helpers::fork_fail(),
        ["fork-churn", stop_file] => domain_helpers::fork_churn(stop_file),
        ["exit-storm", threads] => domain_helpers::exit_storm(threads),
        ["ipc-create", kind, key] => match ipc_access::create(kind, parse_key(key)) {
            Ok(id) => {
                println!("{id}");
                0
            }
            Err(err) => {
                eprintln!("{err}");
                20
            }
        },
        ["ipc-op", kind, key, id, op] => report(ipc_access::attempt(
            kind,
            parse_key(key),
            id.parse().expect("IPC id"),
            op,
        )),
        ["ipc-same-domain", kind, key] => report(ipc_access::same_domain(kind, parse_key(key))),
        ["unix-serve", kind, name] => match socket_access::serve(kind, name) {
            Ok(()) => EXIT_OK,
            Err(err) => {
                eprintln!("{err}");
                EXIT_WRONG
            }
        },
        ["unix-op", op, kind, name] => report(socket_access::attempt(op, kind, name)),
        ["unix-same-domain", kind, name] => report(socket_access::same_domain(kind, name)),
        ["unix-handed-over", outside] => report(socket_access::handed_over(outside, seal_self)),
        ["key-serve", name] => match key_access::serve(name) {
            Ok(()) => EXIT_OK,
            Err(err) => {
                eprintln!("{err}");
                EXIT_WRONG
            }
        },
        ["key-op", op, serial, name] => report(key_access::attempt(
            op,
            serial.parse().expect("serial"),
            name,
        )),
        ["key-same-domain", name] => report(key_access::same_domain(name)),
        ["key-session-to-parent"] => report(key_access::session_to_parent()),
        ["shm-create", kind, name] => match shm_access::create(kind, name) {
            Ok(()) => EXIT_OK,
            Err(err) => {
                eprintln!("{err}");
                EXIT_WRONG
            }
        },
        ["shm-op", kind, name, op] => report(shm_access::attempt(kind, name, op)),
        ["shm-same-domain", kind, name] => report(shm_access::same_domain(kind, name)),
        ["syscall-rounds", rounds] => match crate::bench_hooks::syscall_rounds(rounds) {
            Ok(()) => EXIT_OK,
            Err(err) => {
                eprintln!("{err}");
                EXIT_WRONG
            }
        },
        ["bench-micro", iterations] => match crate::bench::workloads::run_micro(iterations) {
            Ok(()) => EXIT_OK,
            Err(err) => {
                eprintln!("{err}");
                EXIT_WRONG
            }
        },
        ["bench-idle"] => crate::bench::task_start_idle(),
        ["perf-same-domain"] => with_forked_child(|child| report(perf_access::attempt(child, -1))),
        ["list-domains"] => list_domains(),
        ["supervise", token_file] => broker_helpers::supervise(token_file),
        ["task-checks", sup, domain, addr, tail] => {
            broker_helpers::task_checks(sup, domain, addr, tail)
        }
        ["mint-for", domain] => broker_helpers::mint_for(domain),
        ["supervise-exec", token_file] => broker_exec_helpers::supervise_exec(token_file),
        ["take-registration", id] => broker_exec_helpers::take_registration(id),
        ["registered-task", sup] => broker_exec_helpers::registered_task(sup),
        ["broker-bench", token_file, rounds] => broker_helpers::bench(token_file, rounds),
        ["register-refused", token_file, code] => {
            broker_helpers::register_refused(token_file, code)
        }
        ["file-when", go_file, op, path] => {
            // Running here means `bulkhead exec` has sealed us; tell the suite.
            println!("ready");
            std::io::stdout().flush().expect("stdout");
            wait_for(go_file);
            report(file_access::attempt(op, &[path]))
        }
        _ => {
            eprintln!("unknown helper invocation: {words:?}");
            2
        }
    }
}

fn parse_key(key: &str) -> i32 {
    key.parse().expect("IPC key")
}

fn report(outcome: Outcome) -> i32 {
    if let Outcome::Error(message) = &outcome {
        eprintln!("{message}");
    }
    outcome.exit_code()
}

fn probe(access: &str, pid: &str, addr: &str, expect: &str, marker: &str) -> i32 {
    let Some(access) = Access::from_name(access) else {
        eprintln!("unknown access {access}");
        return 2;
    };
    let target = Target {
        pid: pid.parse().expect("pid"),
        addr: u64::from_str_radix(addr, 16).expect("hex address"),
        expect_mem: (expect != "-").then(|| expect.as_bytes().to_vec()),
        env_marker: marker.to_owned(),
    };
    report(access::attempt(access, &target))
}

/// Prints "PID ADDR" and waits until stdin closes: a target process.
fn hold() -> i32 {
    println!("{} {:x}", std::process::id(), secret_addr());
    std::io::stdout().flush().expect("stdout");
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    0
}

/// Forks a child that waits on a pipe; runs `f(child_pid)` in the parent; then ends the child.
fn with_forked_child(f: impl FnOnce(i32) -> i32) -> i32 {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child only calls async-signal-safe functions before _exit.
    let child = unsafe { libc::fork() };
    if child == 0 {
        unsafe {
            libc::close(fds[1]);
            let mut byte = 0u8;
            libc::read(fds[0], std::ptr::from_mut(&mut byte).cast(), 1);
            libc::_exit(0);
        }
    }
    unsafe { libc::close(fds[0]) };
    let code = f(child);
    unsafe {
        libc::close(fds[1]);
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    code
}

/// Control: the same access against a process of the caller's own domain (its forked child,
/// which inherited the domain) must succeed.
fn same_domain(access: &str) -> i32 {
    let Some(access) = Access::from_name(access) else {
        return 2;
    };
    let marker = std::env::var("BULKHEAD_SAME_MARKER").unwrap_or_default();
    with_forked_child(|child| {
        report(access::attempt(
            access,
            &Target {
                pid: child,
                addr: secret_addr(),
                expect_mem: Some(SECRET.to_vec()),
                env_marker: marker,
            },
        ))
    })
}

fn same_domain_traceme() -> i32 {
    // SAFETY: the child runs PTRACE_TRACEME and exits with the outcome.
    let child = unsafe { libc::fork() };
    if child == 0 {
        let code = access::ptrace_traceme().exit_code();
        unsafe { libc::_exit(code) };
    }
    wait_exit_code(child)
}

fn wait_exit_code(pid: i32) -> i32 {
    let mut status = 0;
    // SAFETY: status is a valid out pointer.
    unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        eprintln!("child {pid} did not exit normally (status {status:#x})");
        EXIT_WRONG
    }
}

/// The domain this process was sealed into, as `bulkhead exec` passed it on.
pub(crate) fn own_domain() -> String {
    std::env::var("BULKHEAD_DOMAIN").unwrap_or_else(|_| "none".into())
}

fn self_exe() -> String {
    std::env::current_exe()
        .expect("own path")
        .to_string_lossy()
        .into_owned()
}

/// Creates a child by `method`; the child checks it carries this process's domain.
fn inherit(method: &str, sup: &str) -> i32 {
    let exe = self_exe();
    let expected = own_domain();
    let argv_strings = [
        exe.as_str(),
        "helper",
        "inherited-check",
        sup,
        expected.as_str(),
    ];
    let argv_c: Vec<_> = argv_strings.iter().map(|s| cstring(s)).collect();
    let mut argv: Vec<*const libc::c_char> = argv_c.iter().map(|s| s.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY (for the raw calls below): argv is NUL-terminated and outlives the calls; each
    // child only execs or _exits.
    match method {
        "fork" => exec_in_child_or_wait(i64::from(unsafe { libc::fork() }), &argv),
        "vfork" => {
            // libc deprecates vfork because the compiler does not know it returns twice. The
            // child here only calls execv/_exit with arguments prepared before the call, the
            // one pattern where that is sound; a real vfork is what this test is about.
            #[allow(deprecated)]
            let child = unsafe { libc::vfork() };
            exec_in_child_or_wait(i64::from(child), &argv)
        }
        "posix-spawn" => {
            let mut pid = 0;
            unsafe extern "C" {
                static environ: *const *const libc::c_char;
            }
            let rc = unsafe {
                libc::posix_spawn(
                    &mut pid,
                    argv[0],
                    std::ptr::null(),
                    std::ptr::null(),
                    argv.as_ptr().cast(),
                    environ.cast(),
                )
            };
            if rc != 0 {
                eprintln!("posix_spawn: errno {rc}");
                return EXIT_WRONG;
            }
            wait_exit_code(pid)
        }
        "clone3" => {
            #[repr(C)]
            #[derive(Default)]
            struct CloneArgs {
                flags: u64,
                pidfd: u64,
                child_tid: u64,
                parent_tid: u64,
                exit_signal: u64,
                stack: u64,
                stack_size: u64,
                tls: u64,
            }
            let mut args = CloneArgs {
                exit_signal: libc::SIGCHLD as u64,
                ..Default::default()
            };
            let child = unsafe {
                libc::syscall(
                    libc::SYS_clone3,
                    std::ptr::from_mut(&mut args),
                    std::mem::size_of::<CloneArgs>(),
                )
            };
            exec_in_child_or_wait(child, &argv)
        }
        "thread" => {
            // A new thread is a new task: it must carry the domain on its own.
            let sup: i32 = sup.parse().expect("pid");
            let outcome = std::thread::spawn(move || {
                access::attempt(Access::ProcEnviron, &supervisor_target(sup))
            })
            .join()
            .expect("thread");
            if outcome == Outcome::Denied {
                EXIT_OK
            } else {
                eprintln!("thread of a sealed process: expected denied, got {outcome:?}");
                EXIT_WRONG
            }
        }
        "double-fork" => double_fork(&argv),
        other => {
            eprintln!("unknown method {other}");
            2
        }
    }
}

/// Run right after fork/vfork/clone3: the child (0) execs the check, the parent waits for it.
fn exec_in_child_or_wait(child: i64, argv: &[*const libc::c_char]) -> i32 {
    if child == 0 {
        // SAFETY: argv is NUL-terminated; the child only execs or _exits.
        unsafe {
            libc::execv(argv[0], argv.as_ptr());
            libc::_exit(127);
        }
    }
    if child < 0 {
        eprintln!("creating the child: {}", std::io::Error::last_os_error());
        return EXIT_WRONG;
    }
    wait_exit_code(child as i32)
}

/// A daemon: fork, setsid, fork again, the grandchild is reparented to init. It reports its
/// check's exit status through a pipe.
fn double_fork(argv: &[*const libc::c_char]) -> i32 {
    let mut fds = [0; 2];
    // SAFETY: fds is valid; children only use async-signal-safe calls before exec/_exit.
    unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        let middle = libc::fork();
        if middle == 0 {
            libc::close(fds[0]);
            libc::setsid();
            let daemon = libc::fork();
            if daemon == 0 {
                // Grandchild: run the check as a child of our own, then report.
                let check = libc::fork();
                if check == 0 {
                    libc::execv(argv[0], argv.as_ptr());
                    libc::_exit(127);
                }
                let mut status = 0;
                libc::waitpid(check, &mut status, 0);
                let code: u8 = if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status) as u8
                } else {
                    99
                };
                libc::write(fds[1], std::ptr::from_ref(&code).cast(), 1);
                libc::_exit(0);
            }
            libc::_exit(0);
        }
        libc::close(fds[1]);
        libc::waitpid(middle, std::ptr::null_mut(), 0);
        let mut code = 99u8;
        let mut file = std::fs::File::from(
            <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fds[0]),
        );
        if file.read_exact(std::slice::from_mut(&mut code)).is_err() {
            eprintln!("the daemon never reported");
            return EXIT_WRONG;
        }
        i32::from(code)
    }
}

pub(crate) fn supervisor_target(sup: i32) -> Target {
    Target {
        pid: sup,
        addr: 0,
        expect_mem: None,
        env_marker: crate::SUPERVISOR_MARKER.to_owned(),
    }
}

fn client() -> Client {
    Client::new(std::path::Path::new(
        &std::env::var("BULKHEAD_SOCKET")
            .unwrap_or_else(|_| bulkhead::config::DEFAULT_SOCKET_PATH.into()),
    ))
}

pub(crate) fn whoami() -> Result<Option<u64>, ClientError> {
    client()
        .get::<WhoamiResponse>(PATH_WHOAMI)
        .map(|w| w.domain)
}

/// Run in a child: the agent must see it in `expected` (a domain id or "none"), and reading
/// the supervisor's environ must be denied in a domain and allowed outside one.
fn inherited_check(sup: &str, expected: &str) -> i32 {
    let domain = match whoami() {
        Ok(domain) => domain.map_or_else(|| "none".to_owned(), |d| d.to_string()),
        Err(err) => {
            eprintln!("whoami: {err}");
            return EXIT_WRONG;
        }
    };
    if domain != expected {
        eprintln!("child is in domain {domain}, expected {expected}");
        return EXIT_WRONG;
    }
    let outcome = access::attempt(
        Access::ProcEnviron,
        &supervisor_target(sup.parse().expect("pid")),
    );
    let want = if expected == "none" {
        Outcome::Allowed
    } else {
        Outcome::Denied
    };
    if outcome == want {
        EXIT_OK
    } else {
        eprintln!("reading the supervisor's environ: expected {want:?}, got {outcome:?}");
        EXIT_WRONG
    }
}

/// Asks the agent to seal this (single-threaded) process into a new domain.
fn seal_self() -> Result<(), String> {
    client()
        .post::<_, SealSelfResponse>(PATH_SEAL_SELF, &SealSelfRequest::default())
        .map(|_| ())
        .map_err(|err| format!("sealing: {err:?}"))
}

/// Asks the agent to seal this process while a second thread exists: must be refused, and
/// the process must still be outside any domain afterwards.
fn seal_multithreaded() -> i32 {
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        ready_tx.send(()).expect("ready");
        let _ = stop_rx.recv();
    });
    ready_rx.recv().expect("thread started");
    let result = client().post::<_, SealSelfResponse>(PATH_SEAL_SELF, &SealSelfRequest::default());
    drop(stop_tx);
    thread.join().expect("thread");
    match result {
        Err(ClientError::Refused { code, .. }) if code == "multi_threaded" => {}
        other => {
            eprintln!("sealing a 2-thread process: expected refusal multi_threaded, got {other:?}");
            return EXIT_WRONG;
        }
    }
    match whoami() {
        Ok(None) => EXIT_OK,
        other => {
            eprintln!("after the refused seal the process is in {other:?}, expected no domain");
            EXIT_WRONG
        }
    }
}

/// Run sealed: a second seal must be refused and leave the domain unchanged.
fn reseal() -> i32 {
    let before = own_domain();
    match client().post::<_, SealSelfResponse>(PATH_SEAL_SELF, &SealSelfRequest::default()) {
        Err(ClientError::Refused { code, .. }) if code == "already_in_domain" => {}
        other => {
            eprintln!("second seal: expected refusal already_in_domain, got {other:?}");
            return EXIT_WRONG;
        }
    }
    match whoami() {
        Ok(Some(after)) if after.to_string() == before => EXIT_OK,
        other => {
            eprintln!("after the refused re-seal: domain {other:?}, expected {before}");
            EXIT_WRONG
        }
    }
}

/// Control: a signal to a process of the caller's own domain (its forked child) gets through.
fn same_domain_signal(op: &str) -> i32 {
    // The child inherits the blocked mask, so a SIGIO-borne signal stays pending there.
    signal_access::block_sigio_signal();
    with_forked_child(|child| report(signal_access::attempt(op, child)))
}

/// Outside any domain: starts a sealed task that exits at once, and checks SIGCHLD arrives.
fn sigchld_parent() -> i32 {
    // SAFETY: a zeroed sigset filled by libc; blocking SIGCHLD so sigtimedwait can take it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let child = match std::process::Command::new("bulkhead")
        .args(["exec", "--label", "exits", "--", "true"])
        .spawn()
    {
        Ok(child) => child,
        Err(err) => return report(Outcome::Error(format!("spawn: {err}"))),
    };
    let timeout = libc::timespec {
        tv_sec: 20,
        tv_nsec: 0,
    };
    // SAFETY: valid set and timeout; no siginfo wanted.
    let got = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout) };
    let status = wait_exit_code(child.id() as i32);
    if got != libc::SIGCHLD {
        eprintln!("no SIGCHLD within 20 s of the sealed child's exit");
        return EXIT_WRONG;
    }
    if status != 0 {
        eprintln!("sealed child exited {status}");
        return EXIT_WRONG;
    }
    EXIT_OK
}

pub(crate) fn wait_for(path: &str) {
    while !std::path::Path::new(path).exists() {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// From inside a domain, attacks the supervisor and a protected file in a tight loop until
/// `stop_file` appears, while the suite kills, restarts and upgrades the agent. Prints the
/// counts; succeeds only if every attempt was refused (and there were attempts).
fn attack_loop(sup: &str, stop_file: &str) -> i32 {
    let sup: i32 = sup.parse().expect("pid");
    let (mut attempts, mut allowed, mut errors) = (0u64, 0u64, Vec::new());
    let mut tally = |what: &str, outcome: Outcome| {
        attempts += 1;
        match outcome {
            Outcome::Denied => {}
            Outcome::Allowed => allowed += 1,
            Outcome::Error(err) => {
                if errors.len() < 5 {
                    errors.push(format!("{what}: {err}"));
                }
            }
        }
    };
    while !std::path::Path::new(stop_file).exists() {
        tally(
            "environ",
            access::attempt(
                Access::ProcEnviron,
                &Target {
                    pid: sup,
                    addr: 0,
                    expect_mem: None,
                    env_marker: crate::SUPERVISOR_MARKER.to_owned(),
                },
            ),
        );
        tally(
            "secret",
            file_access::attempt("read", &[crate::fixtures::SECRET]),
        );
        tally("kill-0", signal_access::attempt("kill-0", sup));
        tally("bpf", kernel_access::attempt("bpf"));
        // Leave the emulated CPUs room for the agent restarts (and the guest's own watchdogs).
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    println!(
        "attempts={attempts} allowed={allowed} errors={}",
        errors.len()
    );
    for err in &errors {
        eprintln!("{err}");
    }
    if attempts > 0 && allowed == 0 && errors.is_empty() {
        EXIT_OK
    } else {
        EXIT_WRONG
    }
}

/// Prints this process's domain, then makes `count` refused reads of a protected file.
fn flood(count: &str) -> i32 {
    println!("{}", own_domain());
    let count: u32 = count.parse().expect("count");
    for _ in 0..count {
        if file_access::attempt("read", &[crate::fixtures::SECRET]) != Outcome::Denied {
            return EXIT_WRONG;
        }
    }
    EXIT_OK
}

/// Asks the agent for the node's domains: allowed (0) or refused as a process inside a
/// domain (10, "denied").
fn list_domains() -> i32 {
    match client().get::<DomainsResponse>(PATH_DOMAINS) {
        Ok(_) => EXIT_OK,
        Err(ClientError::Refused { code, .. }) if code == "inside_domain" => {
            Outcome::Denied.exit_code()
        }
        Err(err) => report(Outcome::Error(format!("list domains: {err}"))),
    }
}
