"""The task process's environment: an allow-list, never the supervisor's environment.

A worker's environment is where deployments put the database URL, the JWT secret or key path,
the Fernet key, and connections or variables (`AIRFLOW_CONN_*`, `AIRFLOW_VAR_*`). A task gets
its connections and variables through the Execution API, so none of those is passed, and a
configuration that asks to pass one is refused when the coordinator is made.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

#: Variables a task may inherit from the supervisor unless the deployment says otherwise.
DEFAULT_PASS = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")

#: Markers of a setting that holds a secret or leads to one (Airflow's `_CMD`/`_SECRET`
#: variants read a secret from a command or a secrets backend).
_SECRET_NAME_PARTS = (
    "SQL_ALCHEMY_CONN",
    "JWT_SECRET",
    "JWT_PRIVATE_KEY",
    "FERNET_KEY",
    "SECRET_KEY",
    "SECRETS__BACKEND_KWARGS",
    "_CMD",
    "_SECRET",
    "PASSWORD",
    "RESULT_BACKEND",
    "BROKER_URL",
)
_SECRET_PREFIXES = ("AIRFLOW_CONN_", "AIRFLOW_VAR_", "BULKHEAD_REGISTRATION")


class UnsafeEnvironment(ValueError):
    """The coordinator's configuration would hand the task a secret."""


def is_secret_setting(name: str) -> bool:
    upper = name.upper()
    if upper.startswith(_SECRET_PREFIXES):
        return True
    return upper.startswith("AIRFLOW__") and any(part in upper for part in _SECRET_NAME_PARTS)


def check_names(names: Iterable[str], where: str) -> None:
    bad = sorted(name for name in names if is_secret_setting(name))
    if bad:
        raise UnsafeEnvironment(
            f"{where} names {', '.join(bad)}: a task must not receive these (it gets "
            "connections and variables through the Execution API); remove them"
        )


def task_environment(
    supervisor_env: Mapping[str, str],
    passed: Iterable[str],
    fixed: Mapping[str, str],
) -> dict[str, str]:
    """The environment the task starts with: `passed` names copied from the supervisor when
    set there, then `fixed` values. Both were checked by `check_names` beforehand."""
    env = {name: supervisor_env[name] for name in passed if name in supervisor_env}
    env.update(fixed)
    return env

