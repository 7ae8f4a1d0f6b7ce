"""bulkhead for Airflow's task SDK: tasks sealed in their own domain, with tokens the broker mints.

`BulkheadCoordinator` is the piece Airflow loads (`[sdk] coordinators`); `Client` speaks to the
agent's socket for anything else.
"""

from .client import (
    AgentUnreachable,
    AlreadyRegistered,
    BadRequest,
    BrokerDisabled,
    BulkheadError,
    CallerGone,
    Client,
    ExecutionToken,
    Forbidden,
    InvalidWorkloadToken,
    NotFound,
    Registration,
    Sealed,
    TokenFresh,
)

__all__ = [
    "AgentUnreachable",
    "AlreadyRegistered",
    "BadRequest",
    "BrokerDisabled",
    "BulkheadCoordinator",
    "BulkheadError",
    "CallerGone",
    "Client",
    "ExecutionToken",
    "Forbidden",
    "InvalidWorkloadToken",
    "NotFound",
    "Registration",
    "Sealed",
    "TokenFresh",
]


def __getattr__(name: str):
    # The coordinator imports the task SDK; the client alone needs only the standard library.
    if name == "BulkheadCoordinator":
        from .coordinator import BulkheadCoordinator

        return BulkheadCoordinator
    raise AttributeError(name)
