"""The supervisor side of a sealed Airflow task (task SDK >= 1.3, Airflow >= 3.3).

Airflow's own supervisor forks the task (`os.fork()`), so the task starts as a copy of the
supervisor's memory: its client with the workload token, its environment, whatever the
executor held. This coordinator starts the task as a new program instead:

1. registers the task with the broker by its workload token (the broker checks it and binds a
   new domain to the task's identity);
2. takes the SDK client off the workload token and off the API server's reissued tokens: from
   then on every request carries an execution token the broker minted, held here only;
3. starts `bulkhead-exec --registration ID -- python -c <the SDK's exec entry point>` (or
   `bulkhead exec`, the same from the full CLI, when the launcher is not installed) with an
   allow-listed environment: the agent seals the process into the task's domain *before*
   Python runs, so no instruction of the task runs outside it;
4. waits until the broker mints for the task (which it does only once the task is sealed):
   no seal, no task (the process is killed and the task is not started at the API server);
5. then lets Airflow's supervisor do the rest as always: `/run`, StartupDetails, the request
   loop, heartbeats, logs, XCom, the final state;
6. when the task ends, revokes every token of its domain.

Configure per queue (every queue, "default" included; an unmapped queue falls back to Airflow's
bare fork):

    [sdk]
    coordinators = {"bulkhead": {"classpath": "bulkhead_airflow.BulkheadCoordinator",
                                 "kwargs": {"env": {"AIRFLOW_CONFIG": "/etc/airflow/task.cfg"}}}}
    queue_to_coordinator = {"default": "bulkhead"}
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from socket import socket, socketpair
from typing import Any

import structlog
from airflow.sdk.execution_time.coordinator import BaseCoordinator
from airflow.sdk.execution_time.supervisor import (
    ActivitySubprocess,
    NeverRaised,
    ProcessTracker,
)

from .child_env import DEFAULT_PASS, check_names, task_environment
from .client import Client, NotFound
from .tokens import BrokerAuth, TaskTokens, ignore_reissued_tokens

#: What the task process runs: the task SDK's own entry point for an exec'd task (it reads
#: StartupDetails from fd 0 and asks the supervisor for its log channel).
TASK_ENTRY = "from airflow.sdk.execution_time.supervisor import _child_exec_main; _child_exec_main()"

#: Domain labels the agent accepts.
_LABEL_FORBIDDEN = re.compile(r"[^A-Za-z0-9._:-]")
_LABEL_MAX = 64


class TaskNotSealed(RuntimeError):
    """The task process was not sealed into its domain; it was killed before running."""


def task_label(ti: Any) -> str:
    """A readable domain label (`dag.task`), in the characters the agent accepts."""
    text = f"{getattr(ti, 'dag_id', '')}.{getattr(ti, 'task_id', '')}"
    return _LABEL_FORBIDDEN.sub("_", text)[:_LABEL_MAX] or "task"


class _PopenTracker(ProcessTracker):
    """The supervisor's view of a process started with Popen (it did not fork it)."""

    ProcessNotFound = NeverRaised
    TimeoutExpired = subprocess.TimeoutExpired

    def __init__(self, popen: subprocess.Popen):
        self._popen = popen

    @property
    def pid(self) -> int:
        return self._popen.pid

    def send_signal(self, s: signal.Signals) -> None:
        self._popen.send_signal(s)

    def wait(self, timeout: float | None) -> int:
        return self._popen.wait(timeout)


def _early_output(stream: socket, limit: int = 4096) -> str:
    """What a process that died before its seal wrote (bulkhead exec says why it refused)."""
    flags = fcntl.fcntl(stream.fileno(), fcntl.F_GETFL)
    fcntl.fcntl(stream.fileno(), fcntl.F_SETFL, flags | os.O_NONBLOCK)
    try:
        return stream.recv(limit).decode(errors="replace").strip()
    except OSError:
        return ""
    finally:
        fcntl.fcntl(stream.fileno(), fcntl.F_SETFL, flags)


def wait_until_sealed(
    tokens: TaskTokens,
    popen: subprocess.Popen,
    timeout: float,
    stderr: socket,
) -> None:
    """Returns once the broker mints for the task, which it does only for a sealed task."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            tokens.first()
            return
        except NotFound:
            pass
        status = popen.poll()
        if status is not None:
            said = _early_output(stderr)
            raise TaskNotSealed(
                f"the task process exited with {status} before it was sealed"
                + (f": {said}" if said else "")
            )
        if time.monotonic() >= deadline:
            raise TaskNotSealed(f"the task process was not sealed within {timeout:g} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


class SealedActivitySubprocess(ActivitySubprocess):
    """Airflow's task supervisor, with the task started as a new, sealed program."""

    @classmethod
    def start(  # type: ignore[override]
        cls,
        *,
        what: Any,
        dag_rel_path: str | os.PathLike[str],
        bundle_info: Any,
        client: Any,
        argv: list[str],
        env: Mapping[str, str],
        tokens: TaskTokens,
        seal_timeout: float,
        logger: Any = None,
        sentry_integration: str = "",
        **kwargs: Any,
    ) -> SealedActivitySubprocess:
        child_stdout, read_stdout = socketpair()
        child_stderr, read_stderr = socketpair()
        child_requests, read_requests = socketpair()
        # The exec'd task asks for its log channel later (ResendLoggingFD); this end only
        # completes the set the supervisor's readers expect.
        read_logs, child_logs = socketpair()
        parent_ends = (read_stdout, read_stderr, read_requests, read_logs)
        child_ends = (child_stdout, child_stderr, child_requests, child_logs)
        try:
            # A session of its own: the task and its children can then join no process group
            # but their own, so Airflow's killpg(getpgid(task)) reaches nothing of another task.
            popen = subprocess.Popen(
                argv,
                stdin=child_requests.fileno(),
                stdout=child_stdout.fileno(),
                stderr=child_stderr.fileno(),
                env=dict(env),
                close_fds=True,
                cwd="/",
                start_new_session=True,
            )
        except BaseException:
            for end in parent_ends:
                end.close()
            raise
        finally:
            for end in child_ends:
                end.close()
        proc = cls(
            id=what.id,
            pid=popen.pid,
            process=_PopenTracker(popen),
            stdin=read_requests,
            client=client,
            process_log=logger or structlog.get_logger(logger_name="task").bind(),
            start_time=time.monotonic(),
            new_process_group=True,
            **kwargs,
        )
        proc._register_pipe_readers(read_stdout, read_stderr, read_requests, read_logs, data={})
        try:
            wait_until_sealed(tokens, popen, seal_timeout, read_stderr)
        except BaseException:
            popen.kill()
            popen.wait()
            proc.selector.close()
            for end in parent_ends:
                end.close()
            raise
        # From here on it is Airflow's flow: /run (with the broker's token), then StartupDetails.
        proc._on_child_started(
            ti=what,
            dag_rel_path=dag_rel_path,
            bundle_info=bundle_info,
            sentry_integration=sentry_integration,
        )
        return proc


class BulkheadCoordinator(BaseCoordinator):
    """Runs each task sealed in its own bulkhead domain, with broker-minted tokens.

    kwargs (from `[sdk] coordinators`):
      bulkhead: the bulkhead binary (name on PATH or path), default "bulkhead";
      launcher: the small launcher that seals and execs (name on PATH or path), default
           "bulkhead-exec"; when it is not found, `bulkhead exec` does the same, slower;
      socket: the agent's socket, default $BULKHEAD_SOCKET or /run/bulkhead/bulkhead.sock;
      python: the task's interpreter, default this one;
      pass_env: variables the task inherits from the worker (PATH, LANG, LC_*, TZ by default);
      env: fixed variables for the task, e.g. AIRFLOW_CONFIG naming a config without secrets
           and AIRFLOW_HOME naming a directory the task may write;
      seal_timeout: seconds to wait for the seal (default 30).
    A secret among pass_env or env is refused here, so the worker does not start tasks with it.
    """

    def __init__(
        self,
        *,
        bulkhead: str = "bulkhead",
        launcher: str = "bulkhead-exec",
        socket: str | None = None,
        python: str | None = None,
        pass_env: Iterable[str] = DEFAULT_PASS,
        env: Mapping[str, str] | None = None,
        seal_timeout: float = 30.0,
    ):
        self._pass_env = tuple(pass_env)
        self._env = dict(env or {})
        check_names(self._pass_env, "the bulkhead coordinator's pass_env")
        check_names(self._env, "the bulkhead coordinator's env")
        found = shutil.which(bulkhead)
        if found is None:
            raise FileNotFoundError(f"the bulkhead coordinator cannot find the binary {bulkhead!r}")
        self._bulkhead = found
        # The same seal and exec as `bulkhead exec`, from a binary that starts several times
        # faster (README, "Benchmarks"): it is on the path of every task start.
        self._launcher = shutil.which(launcher)
        self._agent = Client(socket)
        self._python = python or sys.executable
        if not seal_timeout > 0:
            raise ValueError("seal_timeout must be positive")
        self._seal_timeout = float(seal_timeout)

    def _argv(self) -> list[str]:
        seal = [self._launcher] if self._launcher else [self._bulkhead, "exec"]
        return [
            *seal,
            "--socket",
            self._agent.socket_path,
            "--",
            self._python,
            "-c",
            TASK_ENTRY,
        ]

    def execute_task(
        self,
        *,
        what: Any,
        dag_rel_path: str | os.PathLike[str],
        bundle_info: Any,
        client: Any,
        logger: Any = None,
        sentry_integration: str = "",
        subprocess_logs_to_stdout: bool = False,
        **kwargs: Any,
    ) -> BaseCoordinator.ExecutionResult:
        log = structlog.get_logger(logger_name="bulkhead")
        registration = self._agent.register(
            workload_token=_workload_token(client), label=task_label(what)
        )
        tokens = TaskTokens(self._agent, registration.sub)
        ignore_reissued_tokens(client)
        client.auth = BrokerAuth(tokens)
        env = task_environment(os.environ, self._pass_env, self._env)
        env["BULKHEAD_REGISTRATION"] = registration.registration
        try:
            process = SealedActivitySubprocess.start(
                what=what,
                dag_rel_path=dag_rel_path,
                bundle_info=bundle_info,
                client=client,
                argv=self._argv(),
                env=env,
                tokens=tokens,
                seal_timeout=self._seal_timeout,
                logger=logger,
                sentry_integration=sentry_integration,
                subprocess_logs_to_stdout=subprocess_logs_to_stdout,
            )
            log.info("task sealed", sub=tokens.sub, domain=tokens.domain, pid=process.pid)
            exit_code = process.wait()
            return self.ExecutionResult(exit_code, process.final_state)
        finally:
            try:
                revoked = tokens.revoke_all()
                log.info("task tokens revoked", sub=tokens.sub, domain=tokens.domain, revoked=revoked)
            except Exception as err:  # the agent revokes at the domain's end as well
                log.warning("could not revoke the task's tokens", sub=tokens.sub, error=str(err))


def _workload_token(client: Any) -> str:
    """The workload token the executor gave this supervisor (the SDK keeps it in its auth)."""
    token = getattr(getattr(client, "auth", None), "token", None)
    if not isinstance(token, str) or not token:
        raise RuntimeError(
            "the task SDK client carries no workload token (client.auth.token): cannot register "
            "the task with bulkhead; refusing to run it"
        )
    return token
