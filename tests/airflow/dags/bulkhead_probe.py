"""The task the VM suite runs through Airflow's own supervisor, sealed by bulkhead.

It does what a hostile task would: reach for its supervisor's memory, environment and token,
the worker's airflow.cfg, the broker's and the executor's keys, and the broker itself. Each
attempt's outcome is returned as the task's XCom, so the suite judges it together with the
task's final state. Midway it asks the suite's control (a process outside every domain) to make
the same reads while the supervisor is alive: those must succeed, so a harness that denies
everything cannot pass.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from airflow.sdk import dag, task

WORK = Path(os.environ.get("BULKHEAD_PROBE_WORK", "/tmp/airflow-test"))


def _broker(plan, call):
    from bulkhead_airflow import Client

    return lambda: call(Client(plan["socket"]))


def _ask_control(pid: int) -> dict:
    """Has the control make the outside reads now, while the supervisor is alive."""
    (WORK / "control-request").write_text(str(pid))
    done = WORK / "control-done"
    for _ in range(3000):
        if done.exists():
            return json.loads(done.read_text())
        time.sleep(0.1)
    return {"error": "the control never answered"}


@dag(schedule=None, catchup=False, tags=["bulkhead"])
def bulkhead_probe():
    @task
    def probe(ti=None):
        from probes import attempt, process_vm_readv, ptrace_attach, read, read_memory

        plan = json.loads((WORK / "plan.json").read_text())
        supervisor = os.getppid()
        ti_id = str(ti.id)
        attacks = {
            "supervisor-mem": attempt(lambda: read_memory(supervisor)),
            "supervisor-environ": attempt(lambda: read(f"/proc/{supervisor}/environ")),
            "supervisor-fds": attempt(lambda: os.listdir(f"/proc/{supervisor}/fd")),
            "supervisor-process_vm_readv": attempt(lambda: process_vm_readv(supervisor)),
            "supervisor-ptrace": attempt(lambda: ptrace_attach(supervisor)),
            "airflow-cfg": attempt(lambda: read(plan["airflow_cfg"])),
            "executor-key": attempt(lambda: read(plan["executor_key"])),
            "broker-keys": attempt(lambda: [read(p) for p in plan["broker_key_files"]]),
            "mint-by-sub": attempt(_broker(plan, lambda c: c.mint(sub=ti_id))),
            "mint-own-domain": attempt(_broker(plan, lambda c: c._request("POST", "/v1/tokens", {}))),
            "register": attempt(_broker(plan, lambda c: c.register(sub=ti_id))),
        }
        # Domain-side controls: the task reads its own files and reaches the agent at all.
        controls = {
            "own-environ": attempt(lambda: read("/proc/self/environ")),
            "public-file": attempt(lambda: read(plan["public_file"])),
            "whoami": attempt(_broker(plan, lambda c: c.whoami())),
        }
        outside = _ask_control(supervisor)
        ti.xcom_push(key="sealed_domain", value=os.environ.get("BULKHEAD_DOMAIN"))
        return {
            "attacks": attacks,
            "controls": controls,
            "outside": outside,
            "env_names": sorted(os.environ),
            "supervisor": supervisor,
        }

    probe()


bulkhead_probe()
