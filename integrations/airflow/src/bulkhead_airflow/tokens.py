"""The task's execution tokens, held by the supervisor only.

The broker mints them for the task's supervisor (the process that registered the task); the task
itself never sees one, since every Execution API call of a task goes through its supervisor. A
token is renewed once 20% of its life is left, the point at which Airflow's own API server
would reissue it, so a request never leaves with a token about to expire.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator

import httpx

from .client import BulkheadError, Client, ExecutionToken, TokenFresh

#: Renew when this share of the token's life is left (Airflow's JWTReissueMiddleware uses 20%).
RENEW_AT_REMAINING = 0.2


class TaskTokens:
    """The current execution token of one task, renewed from the broker when it runs low."""

    #: A held token is still sent when renewal fails, until this many seconds before its end.
    EXPIRY_MARGIN = 5.0
    #: After the broker says the held token is still fresh, ask again only this much later.
    FRESH_BACKOFF = 1.0

    def __init__(
        self,
        bulkhead: Client,
        sub: str,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._bulkhead = bulkhead
        self.sub = sub
        self._clock = clock
        self._lock = threading.Lock()
        self._current: ExecutionToken | None = None
        self._renew_at = 0.0
        self._expires_at = 0.0
        self._closed = False
        self.domain: int | None = None

    def first(self) -> ExecutionToken:
        """The first token, which exists only once the task is sealed (`NotFound` before)."""
        with self._lock:
            return self._mint()

    def current(self) -> str:
        """The token to send now."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the task's tokens were revoked: no request may be made")
            if self._current is not None and self._clock() < self._renew_at:
                return self._current.token
            try:
                return self._mint().token
            except TokenFresh:
                # The broker judges the held one still fresh (its clock and ours differ by
                # rounding): keep it, and do not ask again at once.
                if self._current is None:
                    raise
                self._renew_at = self._clock() + self.FRESH_BACKOFF
                return self._current.token
            except BulkheadError:
                # After the task's process exited the broker mints no more (its domain ended),
                # yet Airflow's supervisor still reports the final state and uploads logs: the
                # held token serves while it lives.
                if self._current is not None and self._clock() < self._expires_at - self.EXPIRY_MARGIN:
                    return self._current.token
                raise

    def _mint(self) -> ExecutionToken:
        minted_at = self._clock()
        token = self._bulkhead.mint(sub=self.sub)
        self._current = token
        self.domain = token.domain
        self._renew_at = minted_at + token.expires_in * (1.0 - RENEW_AT_REMAINING)
        self._expires_at = minted_at + token.expires_in
        return token

    def revoke_all(self) -> int:
        """Revokes every token of the task's domain (the broker also does when the domain ends;
        this covers a task whose processes outlive it). No token is handed out afterwards."""
        with self._lock:
            self._closed = True
            self._current = None
            if self.domain is None:
                return 0
            return self._bulkhead.revoke_domain(self.domain)


class BrokerAuth(httpx.Auth):
    """httpx authentication with the task's broker-minted token, read at each request."""

    def __init__(self, tokens: TaskTokens):
        self._tokens = tokens

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = "Bearer " + self._tokens.current()
        yield request

    def __repr__(self) -> str:  # never the token
        return f"BrokerAuth(sub={self._tokens.sub!r})"


def ignore_reissued_tokens(client: httpx.Client) -> None:
    """Stops the SDK client from swapping in the `Refreshed-API-Token` the API server sends (at
    `/run` and near expiry): those are signed by the server's own key, not minted by the
    broker, so they would put a token the broker never recorded into play."""
    from airflow.sdk.api.client import Client as SdkClient

    hooks = client.event_hooks
    kept = [
        hook
        for hook in hooks.get("response", [])
        if getattr(hook, "__func__", None) is not SdkClient._update_auth
    ]
    if len(kept) == len(hooks.get("response", [])):
        raise RuntimeError(
            "this task SDK's client has no Client._update_auth response hook: cannot keep the "
            "API server's reissued tokens out; refusing to run the task (is the SDK version "
            "supported?)"
        )
    client.event_hooks = {**hooks, "response": kept}
