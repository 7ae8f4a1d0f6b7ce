"""A client for the bulkhead agent's local API (HTTP/1.1 + JSON over its Unix socket).

Standard library only. Every refusal of the agent becomes a `BulkheadError` subclass named after
its error code, so a supervisor can tell "not my task" from "agent down" without parsing
sentences. Tokens are returned to the caller and never logged or put in exception messages.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from dataclasses import dataclass
from typing import Any

DEFAULT_SOCKET = "/run/bulkhead/bulkhead.sock"
#: Bodies the agent accepts are at most 16 KiB; answers are small too.
MAX_RESPONSE_BYTES = 1 << 20


class BulkheadError(Exception):
    """The agent refused, or could not be asked. `code` is the agent's error code."""

    code = "error"

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class AgentUnreachable(BulkheadError):
    """No agent answers on the socket: the task must not run (no seal, no task)."""

    code = "unreachable"


class Forbidden(BulkheadError):
    code = "forbidden"


class NotFound(BulkheadError):
    code = "not_found"


class InvalidWorkloadToken(BulkheadError):
    code = "invalid_workload_token"


class AlreadyRegistered(BulkheadError):
    code = "already_registered"


class TokenFresh(BulkheadError):
    """The last execution token still has more than 20% of its life: keep using it."""

    code = "token_fresh"


class CallerGone(BulkheadError):
    code = "caller_gone"


class BrokerDisabled(BulkheadError):
    code = "broker_disabled"


class BadRequest(BulkheadError):
    code = "bad_request"


_BY_CODE = {
    cls.code: cls
    for cls in (
        Forbidden,
        NotFound,
        InvalidWorkloadToken,
        AlreadyRegistered,
        TokenFresh,
        CallerGone,
        BrokerDisabled,
        BadRequest,
    )
}


@dataclass(frozen=True)
class Registration:
    """A task registered for `bulkhead exec --registration ID` (no pid given)."""

    registration: str
    expires_in: int
    sub: str


@dataclass(frozen=True)
class Sealed:
    """A task registered with its pid: that process is sealed into `domain`."""

    domain: int
    sub: str


@dataclass(frozen=True, repr=False)
class ExecutionToken:
    token: str
    jti: str
    domain: int
    sub: str
    exp: int
    expires_in: int

    def __repr__(self) -> str:  # never the token itself
        return f"ExecutionToken(jti={self.jti!r}, domain={self.domain}, exp={self.exp})"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("bulkhead", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Client:
    """One request per connection: the agent identifies the caller by the connection's peer."""

    def __init__(self, socket_path: str | None = None, timeout: float = 10.0):
        self.socket_path = socket_path or os.environ.get("BULKHEAD_SOCKET", DEFAULT_SOCKET)
        self.timeout = timeout

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        connection = _UnixConnection(self.socket_path, self.timeout)
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if payload is not None else {}
            try:
                connection.request(method, path, body=payload, headers=headers)
                response = connection.getresponse()
                raw = response.read(MAX_RESPONSE_BYTES + 1)
            except OSError as err:
                raise AgentUnreachable(
                    f"cannot reach the bulkhead agent at {self.socket_path}: {err.strerror or err}"
                ) from None
        finally:
            connection.close()
        if len(raw) > MAX_RESPONSE_BYTES:
            raise BulkheadError(f"{path}: answer larger than {MAX_RESPONSE_BYTES} bytes")
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            raise BulkheadError(f"{path}: the agent's answer is not JSON", response.status) from None
        if 200 <= response.status < 300:
            return answer
        code = answer.get("code", "error") if isinstance(answer, dict) else "error"
        message = answer.get("error", "") if isinstance(answer, dict) else ""
        cls = _BY_CODE.get(code, BulkheadError)
        error = cls(f"{method} {path}: {code}: {message}", response.status)
        error.code = code
        raise error

    def status(self) -> dict[str, Any]:
        return self._request("GET", "/v1/status")

    def whoami(self) -> dict[str, Any]:
        return self._request("GET", "/v1/whoami")

    def register(
        self,
        *,
        workload_token: str | None = None,
        sub: str | None = None,
        pid: int | None = None,
        label: str | None = None,
    ) -> Sealed | Registration:
        """Registers a task by its workload token (or `sub` where the node allows local
        issuing). With `pid` (a child of the caller) that process is sealed now; without, the
        answer is a registration for `bulkhead exec --registration`."""
        body: dict[str, Any] = {}
        for name, value in (("workload_token", workload_token), ("sub", sub), ("pid", pid), ("label", label)):
            if value is not None:
                body[name] = value
        answer = self._request("POST", "/v1/tasks", body)
        if "registration" in answer:
            return Registration(answer["registration"], int(answer["expires_in"]), answer["sub"])
        return Sealed(int(answer["domain"]), answer["sub"])

    def mint(self, *, domain: int | None = None, sub: str | None = None) -> ExecutionToken:
        """An execution token for a task this supervisor registered: by its domain, or by its
        `sub` when the task was started through `bulkhead exec --registration` (the supervisor
        then never saw the domain id). `NotFound` until the task is sealed."""
        if (domain is None) == (sub is None):
            raise ValueError("mint takes exactly one of domain= or sub=")
        body: dict[str, Any] = {"domain": domain} if domain is not None else {"sub": sub}
        answer = self._request("POST", "/v1/tokens", body)
        return ExecutionToken(
            token=answer["token"],
            jti=answer["jti"],
            domain=int(answer["domain"]),
            sub=answer["sub"],
            exp=int(answer["exp"]),
            expires_in=int(answer["expires_in"]),
        )

    def revoke_domain(self, domain: int) -> int:
        return int(self._request("POST", "/v1/tokens/revoke", {"domain": domain})["revoked"])

    def jwks(self) -> dict[str, Any]:
        return self._request("GET", "/v1/jwks")
