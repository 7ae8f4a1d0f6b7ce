"""Runs one real Airflow task the way a worker does, through the bulkhead coordinator.

Airflow's own pieces, none stubbed: the metadata database (sqlite, made by Airflow's migrations),
the DAG parsed and serialized by Airflow, a DAG run and a queued task instance, a workload token
made by Airflow's JWTGenerator with the executor's key (as the scheduler makes it), the Execution
API app with its JWT validation trusting *only the broker's keys* (so a request with any token
the broker did not mint fails the task), and the task SDK's `supervise_task`, which picks the
coordinator from `[sdk] queue_to_coordinator` as a worker would.

Prints one line `BULKHEAD-AIRFLOW-RESULT {json}`: the supervisor's exit code, the task's final
state and XComs, which keys signed the requests the API received, and the broker's revocations.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
INTEGRATION = HERE.parent.parent / "integrations" / "airflow" / "src"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--work", type=Path, required=True, help="scratch directory (made empty)")
    p.add_argument("--bulkhead", required=True, help="the bulkhead binary")
    p.add_argument("--socket", required=True, help="the agent's socket")
    p.add_argument("--executor-key", required=True, help="the executor's workload-token key (PEM)")
    p.add_argument("--workload-jwks", required=True, help="its public JWKS (for the kid)")
    p.add_argument("--airflow-cfg", type=Path, required=True, help="where the worker's airflow.cfg goes")
    p.add_argument("--broker-keys", type=Path, required=True, help="the broker's key directory")
    p.add_argument("--public-file", required=True, help="a file every task may read")
    p.add_argument("--marker", required=True, help="an environment variable only the supervisor has")
    p.add_argument("--integration", type=Path, default=INTEGRATION, help="bulkhead_airflow's parent")
    p.add_argument("--explain", action="store_true", help="also print the outcome for a person")
    return p.parse_args()


def write_configs(args: argparse.Namespace, kid: str) -> dict[str, str]:
    """The worker's airflow.cfg (with its secrets: database, key) and the task's (without)."""
    work = args.work
    worker_home, task_home, dags = work / "worker-home", work / "task-home", HERE / "dags"
    for d in (worker_home, task_home / "logs", work / "logs"):
        d.mkdir(parents=True, exist_ok=True)
    python_path = f"{args.integration}:{HERE}"
    task_cfg = work / "task.cfg"
    task_cfg.write_text(
        "[core]\n"
        f"dags_folder = {dags}\n"
        "load_examples = False\n"
        "[logging]\n"
        f"base_log_folder = {task_home / 'logs'}\n"
    )
    coordinators = {
        "bulkhead": {
            "classpath": "bulkhead_airflow.BulkheadCoordinator",
            "kwargs": {
                "bulkhead": args.bulkhead,
                "socket": args.socket,
                "env": {
                    "AIRFLOW_CONFIG": str(task_cfg),
                    "AIRFLOW_HOME": str(task_home),
                    "PYTHONPATH": python_path,
                    "BULKHEAD_PROBE_WORK": str(work),
                },
            },
        }
    }
    args.airflow_cfg.parent.mkdir(parents=True, exist_ok=True)
    args.airflow_cfg.write_text(
        "[core]\n"
        f"dags_folder = {dags}\n"
        "load_examples = False\n"
        "[database]\n"
        f"sql_alchemy_conn = sqlite:///{worker_home}/airflow.db\n"
        "[api_auth]\n"
        f"jwt_private_key_path = {args.executor_key}\n"
        f"jwt_kid = {kid}\n"
        f"trusted_jwks_url = {work / 'api-jwks.json'}\n"
        "[logging]\n"
        f"base_log_folder = {work / 'logs'}\n"
        "[workers]\n"
        "min_heartbeat_interval = 1\n"
        "[sdk]\n"
        f"coordinators = {json.dumps(coordinators)}\n"
        'queue_to_coordinator = {"default": "bulkhead"}\n'
    )
    return {
        "AIRFLOW_CONFIG": str(args.airflow_cfg),
        "AIRFLOW_HOME": str(worker_home),
        "PYTHONPATH": python_path,
    }


def main() -> None:
    args = parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    for stale in ("control-request", "control-done", "plan.json"):
        (args.work / stale).unlink(missing_ok=True)
    kid = json.loads(Path(args.workload_jwks).read_text())["keys"][0]["kid"]
    env = write_configs(args, kid)
    os.environ.update(env)
    sys.path[:0] = env["PYTHONPATH"].split(":")

    # The API server trusts the broker's keys only: every request the task's supervisor makes
    # after registering must carry a token the broker minted, or the task fails.
    from bulkhead_airflow import Client as Bulkhead

    agent = Bulkhead(args.socket)
    broker_jwks = agent.jwks()
    (args.work / "api-jwks.json").write_text(json.dumps(broker_jwks))
    broker_kids = [k["kid"] for k in broker_jwks["keys"]]

    t0 = time.monotonic()
    from airflow import settings
    from airflow.utils import db

    db.resetdb()
    t_db = time.monotonic()

    from airflow.api_fastapi.auth.tokens import JWTGenerator
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.executors.workloads import BundleInfo, ExecuteTask
    from airflow.models.dagbag import DBDagBag
    from airflow.models.xcom import XComModel
    from airflow.sdk import timezone
    from airflow.utils.state import TaskInstanceState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    session = settings.Session()
    bundles = DagBundlesManager()
    bundles.sync_bundles_to_db(session=session)
    session.commit()
    bundle = bundles.get_bundle("dags-folder")
    bundle.initialize()
    sync_bag_to_db(
        BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name="dags-folder"),
        "dags-folder",
        None,
    )
    dag = DBDagBag().get_latest_version_of_dag("bulkhead_probe", session=session)
    now = timezone.utcnow()
    run = dag.create_dagrun(
        run_id="sealed",
        logical_date=now,
        run_after=now,
        run_type=DagRunType.MANUAL,
        triggered_by=DagRunTriggeredByType.TEST,
        state="running",
        data_interval=(now, now),
        session=session,
    )
    ti = run.get_task_instance("probe", session=session)
    ti.try_number, ti.state = 1, TaskInstanceState.QUEUED
    session.commit()

    # As the scheduler makes it: Airflow's generator with the executor's key.
    key = load_pem_private_key(Path(args.executor_key).read_bytes(), password=None)
    generator = JWTGenerator(
        private_key=key, kid=kid, valid_for=600, audience="urn:airflow.apache.org:task"
    )
    workload = ExecuteTask.make(
        ti,
        dag_rel_path=Path("bulkhead_probe.py"),
        generator=generator,
        bundle_info=BundleInfo(name="dags-folder"),
    )

    import attrs
    import httpx
    import svcs
    from airflow.api_fastapi.common.dagbag import create_dag_bag
    from airflow.api_fastapi.execution_api.app import (
        InProcessExecutionAPI,
        create_task_execution_api_app,
        lifespan,
    )

    # The real app and its real lifespan (which registers the JWT validator), served in-process.
    app = create_task_execution_api_app(lifespan=attrs.evolve(lifespan, registry=svcs.Registry()))
    app.state.dag_bag = create_dag_bag()
    api = InProcessExecutionAPI()
    api._app = app
    signed_by: collections.Counter[str] = collections.Counter()
    last_token: list[str] = []
    inner = api.transport

    class RecordingTransport(httpx.BaseTransport):
        """Notes which key signed each request the API receives (kid and scope, no token)."""

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            authorization = request.headers.get("Authorization", "")
            signed_by[describe(authorization)] += 1
            last_token[:] = [authorization.removeprefix("Bearer ")]
            return inner.handle_request(request)

    httpx.Client(transport=inner, base_url="http://in-process.invalid./").get("/health")
    from airflow.sdk.api.client import Client
    from airflow.sdk.execution_time.supervisor import supervise_task

    client = Client(
        base_url="http://in-process.invalid./", token=workload.token, transport=RecordingTransport()
    )

    marker = os.environ[args.marker]
    plan = {
        "ti_id": str(ti.id),
        "socket": args.socket,
        "airflow_cfg": str(args.airflow_cfg),
        "executor_key": args.executor_key,
        "broker_key_files": sorted(str(p) for p in args.broker_keys.rglob("*") if p.is_file()),
        "broker_kids": broker_kids,
        "public_file": args.public_file,
        "supervisor_marker": f"{args.marker}={marker}",
    }
    (args.work / "plan.json").write_text(json.dumps(plan))
    control = subprocess.Popen(
        [sys.executable, str(HERE / "control.py"), str(args.work)],
        env={**os.environ, "PYTHONPATH": str(HERE)},
    )
    t1 = time.monotonic()
    rc = supervise_task(
        ti=workload.ti,
        bundle_info=workload.bundle_info,
        dag_rel_path=workload.dag_rel_path,
        token=workload.token,
        client=client,
        log_path=None,
        subprocess_logs_to_stdout=True,
    )
    t2 = time.monotonic()
    try:
        control.wait(timeout=60)
    except subprocess.TimeoutExpired:
        control.kill()

    session.expire_all()
    ti = run.get_task_instance("probe", session=session)
    xcoms = {
        x.key: x.value
        for x in session.query(XComModel).filter_by(
            dag_id="bulkhead_probe", run_id="sealed", task_id="probe"
        )
    }
    revoked = agent._request("GET", "/v1/tokens/revoked")["revoked"]
    after_end = judge_after_end(agent, inner, last_token[0] if last_token else "", str(ti.id))
    result = {
        "rc": rc,
        "state": str(ti.state.value if hasattr(ti.state, "value") else ti.state),
        "xcom": xcoms,
        "signed_by": dict(signed_by),
        "broker_kids": broker_kids,
        "revoked_reasons": sorted({r.get("reason", "") for r in revoked}),
        "after_end": after_end,
        "seconds": {"resetdb": round(t_db - t0, 1), "setup": round(t1 - t_db, 1), "task": round(t2 - t1, 1)},
    }
    print("BULKHEAD-AIRFLOW-RESULT " + json.dumps(result, default=str), flush=True)
    if args.explain:
        sys.exit(0 if explain(result) else 1)


REFUSED = ("EPERM", "EACCES", "Forbidden:", "NotFound:")


def explain(result: dict) -> bool:
    """The demonstration's account of the run; true when it shows what it should."""
    report = result["xcom"].get("return_value") or {}
    attacks = report.get("attacks", {})
    outside = report.get("outside", {}).get("reads", {})
    facts = report.get("outside", {}).get("facts", {})
    # Airflow logs to stdout as well: the account starts after this line.
    print("BULKHEAD-AIRFLOW-EXPLAIN")
    print(f"   task state: {result['state']}, sealed in domain {result['xcom'].get('sealed_domain')}")
    print("   the task (root, in its domain) tried:")
    for name, outcome in attacks.items():
        print(f"     {name:30} {'refused' if outcome.startswith(REFUSED) else 'ALLOWED'} ({outcome})")
    print("   a process outside every domain, the same reads of the live supervisor:")
    for name, outcome in outside.items():
        print(f"     {name:30} {outcome}")
    print(f"     broker execution tokens found in the supervisor's memory: {facts.get('broker-execution-tokens')}")
    print("   requests the Execution API received, by signer: " + ", ".join(f"{k} x{n}" for k, n in result["signed_by"].items()))
    after = result.get("after_end", {})
    print(f"   after the task: broker says its last token is {after.get('broker-introspect')};")
    print(f"     the API refuses it edited ({after.get('api-edited-claims')}) or signed by another key ({after.get('api-stranger-key')});")
    print(f"     the genuine one still passes there ({after.get('api-genuine')}): Airflow checks no revocation")
    return (
        result["state"] == "success"
        and bool(attacks)
        and all(o.startswith(REFUSED) for o in attacks.values())
        and bool(outside)
        and all(o == "allowed" for o in outside.values())
    )


def judge_after_end(agent, transport, token: str, ti_id: str) -> dict:
    """What the broker and Airflow's API say of the task's last token once the task ended, and
    of forgeries of it. Airflow checks no revocation: the genuine token still passes there
    until it expires (the broker's introspection says it is revoked)."""
    import base64

    import httpx
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if not token:
        return {"error": "no token was seen"}
    introspected = agent._request("POST", "/v1/tokens/introspect", {"token": token})
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    other = {**claims, "sub": "01900000-0000-7000-8000-000000000000"}
    edited = base64.urlsafe_b64encode(json.dumps(other).encode()).rstrip(b"=").decode()
    import jwt

    kid = jwt.get_unverified_header(token)["kid"]
    stranger = jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": kid})
    api = httpx.Client(transport=transport, base_url="http://in-process.invalid./")

    def status(bearer: str) -> int:
        path = f"task-instances/{ti_id}/previous-successful-dagrun"
        return api.get(path, headers={"Authorization": f"Bearer {bearer}"}).status_code

    return {
        "broker-introspect": introspected.get("reason") or ("active" if introspected.get("active") else "inactive"),
        "api-genuine": status(token),
        "api-edited-claims": status(f"{header}.{edited}.{signature}"),
        "api-stranger-key": status(stranger),
    }


def describe(authorization: str) -> str:
    """`kid/scope` of a bearer token (both public), or what was sent instead."""
    import jwt

    token = authorization.removeprefix("Bearer ")
    if not token or token == authorization:
        return "no-token"
    try:
        kid = jwt.get_unverified_header(token).get("kid", "?")
        scope = jwt.decode(token, options={"verify_signature": False}).get("scope", "none")
    except jwt.PyJWTError:
        return "not-a-jwt"
    return f"{kid}/{scope}"


if __name__ == "__main__":
    main()
