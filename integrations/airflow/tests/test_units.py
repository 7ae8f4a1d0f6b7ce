"""Unit tests of the integration's own logic (no agent, no Airflow needed beyond httpx)."""

from __future__ import annotations

import json
import os
import socketserver
import sys
import tempfile
import threading
import unittest
from http.server import BaseHTTPRequestHandler

from bulkhead_airflow import client as bh
from bulkhead_airflow.child_env import UnsafeEnvironment, check_names, task_environment
from bulkhead_airflow.tokens import TaskTokens


class ChildEnvironment(unittest.TestCase):
    def test_only_passed_and_fixed_names_reach_the_task(self):
        supervisor = {"PATH": "/bin", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgres://x", "HOME": "/h"}
        env = task_environment(supervisor, ["PATH", "TZ"], {"AIRFLOW_HOME": "/scratch"})
        self.assertEqual(env, {"PATH": "/bin", "AIRFLOW_HOME": "/scratch"})

    def test_secrets_are_refused_by_name(self):
        for name in [
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            "AIRFLOW__API_AUTH__JWT_SECRET",
            "AIRFLOW__API_AUTH__JWT_PRIVATE_KEY_PATH",
            "AIRFLOW__CORE__FERNET_KEY",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD",
            "AIRFLOW__CELERY__BROKER_URL",
            "AIRFLOW_CONN_MY_DB",
            "AIRFLOW_VAR_TOKEN",
            "BULKHEAD_REGISTRATION",
        ]:
            with self.assertRaises(UnsafeEnvironment, msg=name) as caught:
                check_names(["PATH", name], "pass_env")
            self.assertIn(name, str(caught.exception))

    def test_ordinary_names_pass(self):
        check_names(["PATH", "LANG", "AIRFLOW_HOME", "AIRFLOW_CONFIG", "AIRFLOW__CORE__DAGS_FOLDER"], "env")


class FakeAgent:
    """Answers each request from a list of (status, body), recording what was asked."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.asked = []
        self.dir = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.dir.name, "agent.sock")
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                agent.asked.append((self.path, json.loads(self.rfile.read(length) or b"{}")))
                self.reply()

            def do_GET(self):
                agent.asked.append((self.path, None))
                self.reply()

            def reply(self):
                status, body = agent.answers.pop(0)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = socketserver.UnixStreamServer(self.path, Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.dir.cleanup()


def token_answer(token="t1", expires_in=100):
    return 200, {"token": token, "jti": "j-" + token, "domain": 7, "sub": "s", "kid": "k", "exp": 1, "expires_in": expires_in}


class ClientErrors(unittest.TestCase):
    def test_refusals_become_typed_errors_without_the_request(self):
        agent = FakeAgent([(403, {"code": "forbidden", "error": "a process in a domain may not mint"})])
        try:
            with self.assertRaises(bh.Forbidden) as caught:
                bh.Client(agent.path).mint(sub="s")
            self.assertEqual(caught.exception.status, 403)
            self.assertEqual(agent.asked, [("/v1/tokens", {"sub": "s"})])
        finally:
            agent.close()

    def test_unknown_codes_and_non_json_are_errors(self):
        agent = FakeAgent([(500, {"code": "weird", "error": "x"}), (200, b"not json")])
        try:
            with self.assertRaises(bh.BulkheadError) as caught:
                bh.Client(agent.path).status()
            self.assertEqual(caught.exception.code, "weird")
            with self.assertRaises(bh.BulkheadError):
                bh.Client(agent.path).status()
        finally:
            agent.close()

    def test_no_agent_is_unreachable(self):
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaises(bh.AgentUnreachable):
                bh.Client(os.path.join(d, "none.sock")).status()

    def test_mint_takes_one_of_domain_or_sub(self):
        for kwargs in ({}, {"domain": 1, "sub": "s"}):
            with self.assertRaises(ValueError):
                bh.Client("/nonexistent").mint(**kwargs)

    def test_a_token_never_shows_in_repr(self):
        token = bh.ExecutionToken(token="secret.jwt.value", jti="j", domain=1, sub="s", exp=2, expires_in=3)
        self.assertNotIn("secret", repr(token))


class Renewal(unittest.TestCase):
    def test_renewed_once_twenty_percent_is_left_and_kept_when_the_broker_says_fresh(self):
        now = [0.0]
        agent = FakeAgent(
            [token_answer("t1", 100), token_answer("t2", 100), (409, {"code": "token_fresh", "error": ""})]
        )
        try:
            tokens = TaskTokens(bh.Client(agent.path), "s", clock=lambda: now[0])
            tokens.first()
            now[0] = 79.0
            self.assertEqual(tokens.current(), "t1")  # 21% left: no request
            now[0] = 80.0
            self.assertEqual(tokens.current(), "t2")  # 20% left: renewed
            now[0] = 161.0
            self.assertEqual(tokens.current(), "t2")  # the broker says fresh: kept
            self.assertEqual([path for path, _ in agent.asked], ["/v1/tokens"] * 3)
        finally:
            agent.close()

    def test_the_held_token_serves_after_the_domain_ended_until_it_expires(self):
        now = [0.0]
        ended = (404, {"code": "not_found", "error": "no such task"})
        agent = FakeAgent([token_answer("t1", 100), ended, ended, ended])
        try:
            tokens = TaskTokens(bh.Client(agent.path), "s", clock=lambda: now[0])
            tokens.first()
            now[0] = 90.0  # due for renewal, the broker mints no more: the held one serves
            self.assertEqual(tokens.current(), "t1")
            now[0] = 94.0
            self.assertEqual(tokens.current(), "t1")
            now[0] = 95.0  # within the margin of its end: no token rather than a dead one
            with self.assertRaises(bh.NotFound):
                tokens.current()
        finally:
            agent.close()

    def test_a_fresh_answer_is_not_asked_again_at_once(self):
        now = [0.0]
        fresh = (409, {"code": "token_fresh", "error": ""})
        agent = FakeAgent([token_answer("t1", 100), fresh])
        try:
            tokens = TaskTokens(bh.Client(agent.path), "s", clock=lambda: now[0])
            tokens.first()
            now[0] = 80.0
            self.assertEqual(tokens.current(), "t1")
            now[0] = 80.5
            self.assertEqual(tokens.current(), "t1")
            self.assertEqual(len(agent.asked), 2)
        finally:
            agent.close()

    def test_no_token_after_revoke_all(self):
        agent = FakeAgent([token_answer(), (200, {"revoked": 1})])
        try:
            tokens = TaskTokens(bh.Client(agent.path), "s")
            tokens.first()
            tokens.revoke_all()
            with self.assertRaises(RuntimeError):
                tokens.current()
            self.assertEqual(len(agent.asked), 2)
        finally:
            agent.close()

    def test_revoke_all_revokes_the_domain(self):
        agent = FakeAgent([token_answer(), (200, {"revoked": 2})])
        try:
            tokens = TaskTokens(bh.Client(agent.path), "s")
            tokens.first()
            self.assertEqual(tokens.revoke_all(), 2)
            self.assertEqual(agent.asked[-1], ("/v1/tokens/revoke", {"domain": 7}))
        finally:
            agent.close()


class LauncherChoice(unittest.TestCase):
    """The coordinator seals through the launcher when it is there, else `bulkhead exec`."""

    def coordinator(self, launcher: str):
        from bulkhead_airflow.coordinator import BulkheadCoordinator

        return BulkheadCoordinator(bulkhead=sys.executable, launcher=launcher, socket="/run/x.sock")

    def test_the_launcher_when_found(self):
        argv = self.coordinator(sys.executable)._argv()
        self.assertEqual(argv[:4], [sys.executable, "--socket", "/run/x.sock", "--"])

    def test_bulkhead_exec_when_not(self):
        argv = self.coordinator("/nonexistent/bulkhead-exec")._argv()
        self.assertEqual(argv[:5], [sys.executable, "exec", "--socket", "/run/x.sock", "--"])


if __name__ == "__main__":
    unittest.main()
