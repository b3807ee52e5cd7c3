"""Server configuration: one dataclass, built from flags or environment."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from typing import Any

KIB = 1024
MIB = 1024 * KIB
# Room in a message for a task's fields beside its payload and result
# (labels, error, progress, times).
TASK_OVERHEAD = 64 * KIB
# What a tenant may be called (in token files and --operator-tenants).
TENANT_NAME = re.compile(r"[A-Za-z0-9._@-]{1,128}")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Every setting of a Conveyor server, with its default.

    Each field has a `conveyor-server` flag (`--field-name`) and an
    environment variable (`CONVEYOR_FIELD_NAME`); a flag wins over the
    environment.
    """

    host: str = "[::]"
    """Address to listen on."""
    port: int = 50051
    """Port to listen on; 0 picks a free one."""
    workers: int = 16
    """Handler threads: how many plain (not async) handlers run at once. 0
    serves the API only and runs no tasks, async ones included (a replica on
    a shared store, with worker processes)."""
    async_tasks: int = 500
    """Handlers written as `async def` that run at once, as coroutines on
    one event loop of their own, beside the --workers threads: a coroutine
    waiting on I/O holds no thread, so this can be far larger."""
    store: str = "memory://"
    """Where tasks live, as a URL: memory://, sqlite:///path/to/tasks.db or
    redis://host:port/db (query: prefix=name for the key prefix)."""
    lease_seconds: float = 30.0
    """On a shared store (Redis), how long a claimed attempt is held
    without renewal; a worker renews every third of it, and an attempt whose
    worker died is re-queued once its lease lapsed."""
    tasks: tuple[str, ...] = ()
    """Modules to import for their `@task` handlers."""
    accept_unserved_types: bool = False
    """On a shared store, accept submits of a task type that neither this
    server's handlers nor any live worker serve, and queue them until a
    worker that serves the type starts (a rolling deploy). Off, such a
    submit is refused with INVALID_ARGUMENT naming the served types."""
    max_queue: int = 100_000
    """Unfinished (pending and running) tasks accepted before submits get
    RESOURCE_EXHAUSTED."""
    max_payload_bytes: int = 256 * KIB
    """Largest payload accepted, serialized."""
    max_result_bytes: int = 1 * MIB
    """Largest handler result kept, serialized; an attempt that returns a
    larger one fails with INVALID_RESULT and is not retried."""
    max_message_bytes: int = 16 * MIB
    """Largest gRPC message received or sent (a batch is one message)."""
    max_watchers: int = 50_000
    """Open WatchTask and WatchTasks streams (together) before new ones get
    RESOURCE_EXHAUSTED."""
    max_queue_per_tenant: int = 0
    """Quota: unfinished tasks one tenant may have; 0 means only --max-queue
    applies."""
    max_watchers_per_tenant: int = 0
    """Quota: open WatchTask and WatchTasks streams one tenant may have on
    one server; 0 means only --max-watchers applies."""
    retention_seconds: float = 24 * 3600.0
    """How long finished tasks are kept."""
    retention_count: int = 100_000
    """How many finished tasks are kept at most; the oldest go first."""
    default_max_attempts: int = 1
    """Attempts for tasks that do not ask for a number."""
    default_timeout_seconds: float = 0.0
    """Execution timeout for tasks that do not set one; 0 means none."""
    retry_backoff_seconds: float = 1.0
    """First retry delay; it doubles each attempt, with jitter."""
    retry_backoff_max_seconds: float = 300.0
    """Longest retry delay."""
    stop_grace_seconds: float = 5.0
    """After asking a handler to stop (cancel, timeout), how long to wait
    before the task is finished without it."""
    shutdown_grace_seconds: float = 30.0
    """On SIGTERM, how long running tasks may take to finish before they go
    back to the queue."""
    keepalive_time_seconds: float = 60.0
    """Server pings an idle connection this often, to find dead peers."""
    keepalive_timeout_seconds: float = 20.0
    """A ping unanswered this long closes the connection."""
    max_connection_idle_seconds: float = 0.0
    """Close connections idle this long; 0 keeps them."""
    schedule_tick_seconds: float = 1.0
    """How often this process (a server or a worker) looks for schedule
    fires that are due and submits them; 0 fires none from this process.
    Every process of a store may tick: each fire is submitted once."""
    uvloop: bool = True
    """Run the event loop on uvloop when it is installed."""
    log_level: str = "INFO"
    """Logging level of the command-line server."""
    log_format: str = "text"
    """Log lines as 'text' or 'json' (one object per line, with task_id,
    task_type, tenant and attempt where they apply)."""
    metrics_port: int = 0
    """Port of the Prometheus metrics endpoint (HTTP, /metrics); 0 serves
    none."""
    metrics_host: str = ""
    """Address of the metrics endpoint; empty means the same as --host."""
    http_port: int = 8080
    """Port of the HTTP/JSON API (/v1/tasks...), served beside gRPC by the
    same process; 0 picks a free one, -1 serves none."""
    http_host: str = ""
    """Address of the HTTP/JSON API; empty means the same as --host."""
    tls_cert: str = ""
    """PEM file of the server's certificate chain; with --tls-key, serves
    TLS instead of plaintext."""
    tls_key: str = ""
    """PEM file of the private key of --tls-cert."""
    tls_client_ca: str = ""
    """PEM file of the CA certificates that sign client certificates; set,
    every client must present one (mutual TLS)."""
    auth_tokens_file: str = ""
    """File of bearer tokens, one 'TOKEN TENANT' or 'sha256:HEX TENANT' per
    line ('#' comments); set, every call but health and reflection needs
    'authorization: Bearer TOKEN' and sees only its tenant's tasks."""
    auth_tokens: str = field(default="", repr=False, metadata={"env_only": True})
    """Bearer tokens as TOKEN=TENANT or sha256:HEX=TENANT pairs, separated by
    commas; like --auth-tokens-file. Environment only, so that tokens never
    show in the process list."""
    operator_tenants: str = ""
    """Tenants (comma-separated) whose tokens may change task types
    (UpdateTaskType, PauseTaskType, ResumeTaskType): their limits and pause
    hold for every tenant. With tokens and none named, no token may; without
    tokens, every caller may."""
    smtp_url: str = field(default="", repr=False)
    """SMTP server of the send_email task type: smtp://host[:port] (port 25;
    STARTTLS when the server offers it, or always with ?starttls=required),
    smtps://host[:port] (port 465, TLS from the start), credentials as
    smtp://user:password@host (sent only over TLS), ?cafile=PEM to trust a
    private CA. Unset, send_email is not registered. A URL with a password
    belongs in the environment: flags show in the process list."""
    smtp_from: str = ""
    """The From address of send_email messages, such as 'Reports
    <reports@example.com>'; required with --smtp-url."""

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.port <= 65535:
            problems.append(f"port must be 0-65535, got {self.port}")
        if not -1 <= self.http_port <= 65535:
            problems.append(f"http_port must be -1 (none) or 0-65535, got {self.http_port}")
        if not 0 <= self.metrics_port <= 65535:
            problems.append(f"metrics_port must be 0-65535, got {self.metrics_port}")
        if self.log_format not in ("text", "json"):
            problems.append(f"log_format must be text or json, got {self.log_format!r}")
        if self.workers < 0:
            problems.append(f"workers must not be negative, got {self.workers}")
        if self.workers == 0 and self.store.startswith("memory:"):
            problems.append("workers=0 runs no tasks, which needs a shared store, not memory://")
        if self.lease_seconds < 1:
            problems.append(f"lease_seconds must be at least 1, got {self.lease_seconds}")
        for name in (
            "max_queue",
            "max_payload_bytes",
            "max_result_bytes",
            "max_message_bytes",
            "max_watchers",
            "retention_count",
            "default_max_attempts",
            "async_tasks",
        ):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in (
            "max_queue_per_tenant",
            "max_watchers_per_tenant",
            "retention_seconds",
            "default_timeout_seconds",
            "retry_backoff_seconds",
            "retry_backoff_max_seconds",
            "stop_grace_seconds",
            "shutdown_grace_seconds",
            "keepalive_time_seconds",
            "keepalive_timeout_seconds",
            "max_connection_idle_seconds",
            "schedule_tick_seconds",
        ):
            if getattr(self, name) < 0:
                problems.append(f"{name} must not be negative, got {getattr(self, name)}")
        if self.max_payload_bytes + self.max_result_bytes + TASK_OVERHEAD > self.max_message_bytes:
            problems.append(
                "max_payload_bytes + max_result_bytes must leave 64 KiB of max_message_bytes "
                "for the rest of a task, or a task could not be read back; raise "
                "max_message_bytes or lower the others"
            )
        if self.default_max_attempts > 100:
            problems.append("default_max_attempts must be at most 100")
        if bool(self.tls_cert) != bool(self.tls_key):
            problems.append("tls_cert and tls_key go together: give both or neither")
        if self.tls_client_ca and not self.tls_cert:
            problems.append("tls_client_ca needs tls_cert and tls_key: mutual TLS is TLS first")
        for tenant in self.operator_set:
            if not TENANT_NAME.fullmatch(tenant):
                problems.append(
                    f"operator_tenants: tenant {tenant!r} must be 1-128 letters, digits or . _ @ -"
                )
        if self.smtp_url:
            # Imported here, as the configuration is read before anything
            # else of the server is imported.
            from conveyor_server.builtin.smtp_settings import parse_smtp_settings

            try:
                parse_smtp_settings(self.smtp_url, self.smtp_from)
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def operator_set(self) -> frozenset[str]:
        """The tenants of `operator_tenants`."""
        return frozenset(t.strip() for t in self.operator_tenants.split(",") if t.strip())

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> ServerConfig:
        """Settings from CONVEYOR_* variables, then `overrides` on top."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(env_name(f.name))
            if raw is None or raw == "":
                continue
            values[f.name] = parse_value(f.name, raw, default_of(f.name))
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def env_name(field_name: str) -> str:
    return "CONVEYOR_" + field_name.upper()


def default_of(field_name: str) -> Any:
    return getattr(ServerConfig(), field_name)


def parse_value(name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw.replace("_", ""))
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError:
        raise ValueError(
            f"{env_name(name)}={raw!r} is not a valid {type(default).__name__}"
        ) from None
    return raw


def field_docs() -> dict[str, str]:
    """Field name to its docstring, for --help (read from the source)."""
    import ast
    import inspect
    import itertools

    tree = ast.parse(inspect.getsource(ServerConfig))
    docs: dict[str, str] = {}
    body = tree.body[0].body  # type: ignore[attr-defined]
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
        ):
            docs[node.target.id] = " ".join(str(following.value.value).split())
    return docs
