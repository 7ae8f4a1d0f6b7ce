"""A stand-in for the bulkhead agent's socket API, for host tests of the Airflow side only.

The host cannot load LSM programs, so nothing is sealed here and nothing is refused: this only
lets the coordinator's flow with Airflow (register, `bulkhead exec` with the real binary, mint by
`sub` once "sealed", revoke) be exercised quickly. Every security claim is tested in the VM
against the real agent.

Usage: stand_in_agent.py SOCKET  (serves until killed)
"""

from __future__ import annotations

import json
import socketserver
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KEY = Ed25519PrivateKey.generate()
KID = "stand-in-broker"
LIFETIME = 600


class State:
    lock = threading.Lock()
    registrations: dict[str, str] = {}  # registration -> sub
    sealed: dict[str, int] = {}  # sub -> domain
    issued: dict[int, list[tuple[str, int]]] = {}  # domain -> [(jti, exp)]
    revoked: list[dict] = []


def public_jwk() -> dict:
    from jwt.algorithms import OKPAlgorithm

    jwk = json.loads(OKPAlgorithm.to_jwk(KEY.public_key()))
    return {**jwk, "kid": KID, "alg": "EdDSA", "use": "sig"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def refuse(self, status: int, code: str, error: str) -> None:
        self.answer(status, {"code": code, "error": error})

    def body(self) -> dict:
        length = int(self.headers.get("Content-Length", "0"))
        return json.loads(self.rfile.read(length) or b"{}")

    def do_GET(self) -> None:
        if self.path == "/v1/jwks":
            return self.answer(200, {"keys": [public_jwk()]})
        if self.path == "/v1/tokens/revoked":
            with State.lock:
                return self.answer(200, {"revoked": list(State.revoked)})
        if self.path == "/v1/whoami":
            return self.answer(200, {"pid": 0, "uid": 0, "domain": None, "label": None})
        self.refuse(404, "not_found", "no such route")

    def do_POST(self) -> None:
        body = self.body()
        with State.lock:
            if self.path == "/v1/tasks":
                if "workload_token" not in body:
                    return self.refuse(403, "forbidden", "a workload token is required")
                claims = jwt.decode(body["workload_token"], options={"verify_signature": False})
                registration = uuid.uuid4().hex
                State.registrations[registration] = claims["sub"]
                return self.answer(
                    200, {"registration": registration, "expires_in": 30, "sub": claims["sub"]}
                )
            if self.path == "/v1/domains/seal-self":
                sub = State.registrations.pop(body.get("registration", ""), None)
                if sub is None:
                    return self.refuse(404, "not_found", "no such registration")
                domain = len(State.sealed) + 1
                State.sealed[sub] = domain
                return self.answer(200, {"domain": domain, "label": body.get("label")})
            if self.path == "/v1/tokens":
                domain = State.sealed.get(body.get("sub", ""))
                if domain is None:
                    return self.refuse(404, "not_found", "no sealed task")
                now = int(time.time())
                jti = uuid.uuid4().hex
                token = jwt.encode(
                    {
                        "sub": body["sub"],
                        "scope": "execution",
                        "aud": "urn:airflow.apache.org:task",
                        "iat": now,
                        "nbf": now,
                        "exp": now + LIFETIME,
                        "jti": jti,
                    },
                    KEY,
                    algorithm="EdDSA",
                    headers={"kid": KID},
                )
                State.issued.setdefault(domain, []).append((jti, now + LIFETIME))
                return self.answer(
                    200,
                    {
                        "token": token,
                        "jti": jti,
                        "domain": domain,
                        "sub": body["sub"],
                        "kid": KID,
                        "exp": now + LIFETIME,
                        "expires_in": LIFETIME,
                    },
                )
            if self.path == "/v1/tokens/introspect":
                jti = jwt.decode(body["token"], options={"verify_signature": False})["jti"]
                if any(r["jti"] == jti for r in State.revoked):
                    return self.answer(200, {"active": False, "reason": "revoked: revoked"})
                return self.answer(200, {"active": True})
            if self.path == "/v1/tokens/revoke":
                issued = State.issued.pop(body.get("domain", -1), [])
                now = int(time.time())
                State.revoked.extend(
                    {"jti": jti, "exp": exp, "reason": "revoked", "at": now} for jti, exp in issued
                )
                return self.answer(200, {"revoked": len(issued)})
        self.refuse(404, "not_found", "no such route")


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


if __name__ == "__main__":
    with Server(sys.argv[1], Handler) as server:
        print("ready", flush=True)
        server.serve_forever()
