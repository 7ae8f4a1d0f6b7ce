"""The outside control of the sealed-task test: a process in no domain, with the same powers as
the task (root), waits for the task's request and makes the same reads of the live supervisor.
They must succeed; only the domain makes the task's fail."""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

from probes import attempt, find_tokens, process_vm_readv, read, read_memory


def _segment(text: bytes) -> dict:
    padded = text + b"=" * (-len(text) % 4)
    return json.loads(base64.urlsafe_b64decode(padded))


def is_broker_execution_token(token: bytes, broker_kids: list[str], ti_id: str) -> bool:
    """A token the broker signed (its kid) granting this task's execution scope."""
    try:
        header, payload, _ = token.split(b".")
        header, payload = _segment(header), _segment(payload)
    except ValueError:
        return False
    return (
        header.get("kid") in broker_kids
        and payload.get("scope") == "execution"
        and payload.get("sub") == ti_id
    )


def main() -> None:
    work = Path(sys.argv[1])
    plan = json.loads((work / "plan.json").read_text())
    request = work / "control-request"
    deadline = time.monotonic() + 1800
    while not request.exists():
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)
    time.sleep(0.05)
    supervisor = int(request.read_text())
    tokens: list[bytes] = []
    environ = b""

    def read_environ():
        nonlocal environ
        with open(f"/proc/{supervisor}/environ", "rb") as f:
            environ = f.read()

    def scan():
        tokens.extend(find_tokens(supervisor))

    outside = {
        "supervisor-mem": attempt(lambda: read_memory(supervisor)),
        "supervisor-environ": attempt(read_environ),
        "supervisor-fds": attempt(lambda: __import__("os").listdir(f"/proc/{supervisor}/fd")),
        "supervisor-process_vm_readv": attempt(lambda: process_vm_readv(supervisor)),
        "supervisor-token-scan": attempt(scan),
        "airflow-cfg": attempt(lambda: read(plan["airflow_cfg"])),
        "executor-key": attempt(lambda: read(plan["executor_key"])),
        "broker-keys": attempt(lambda: [read(p) for p in plan["broker_key_files"]]),
    }
    marker = plan["supervisor_marker"].encode()
    # Only what the tokens are, never the tokens: the task can read this file.
    facts = {
        "marker-in-environ": marker in environ,
        "broker-execution-tokens": sum(
            1 for t in set(tokens) if is_broker_execution_token(t, plan["broker_kids"], plan["ti_id"])
        ),
    }
    done = work / "control-done"
    partial = work / "control-done.partial"
    partial.write_text(json.dumps({"reads": outside, "facts": facts}))
    partial.rename(done)


if __name__ == "__main__":
    main()
