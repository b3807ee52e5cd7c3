"""Benchmark Conveyor side by side with Dramatiq, Celery, RQ and arq, in one run on one machine.

Usage:
    .venv/bin/python bench/peers.py [--quick] [--tasks N] [--only dramatiq,celery,...]

Needs the peers: pip install -e '.[bench]'. Every system uses the same local
Redis server (--redis-host/--redis-port) and one dedicated database
(--redis-db, 15 by default), which is emptied with FLUSHDB before and after each
system; the run refuses to start when that database holds keys.

For each system the script starts its worker process(es) fresh, then one
separate client process (bench/_peers_client.py) that warms it up, submits
--tasks no-op tasks one per call from --lanes threads (coroutines for asyncio
clients) and waits for every result (tasks/s from the first submit to the last
result observed), then measures submit-to-result latency with one task in
flight; on Conveyor memory and Redis it then submits --bulk-tasks with
`submit_batch` and waits for them. Prints a Markdown table with the ratios to
Dramatiq and the verdicts against the targets, and writes JSON, a PNG chart
and a Markdown section (--out-dir). A full run takes about 8 minutes on two
cores; --quick scales the counts down about 10x for a smoke run, whose numbers
are not the ones to judge.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _peers_chart import render_chart
from _peers_processes import Processes
from _peers_report import filesystem_of, machine_facts, render_markdown, summarize
from _peers_systems import BY_KEY, INSTALL_HINT, Context, RedisDb, System

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


@dataclass(frozen=True)
class Settings:
    tasks: int
    warmup_tasks: int
    latency_tasks: int
    latency_warmup: int
    bulk_tasks: int


# 8 lanes x 5,000 tasks, the shape the targets were set with.
FULL = Settings(
    tasks=40_000, warmup_tasks=500, latency_tasks=500, latency_warmup=50, bulk_tasks=20_000
)
QUICK = Settings(
    tasks=4_000, warmup_tasks=100, latency_tasks=50, latency_warmup=10, bulk_tasks=2_000
)


def run_client(
    ctx: Context, options: argparse.Namespace, system: System, extra: dict[str, Any]
) -> dict[str, Any]:
    settings: Settings = options.settings
    args = {
        **settings.__dict__,
        "bulk_tasks": settings.bulk_tasks if system.bulk else 0,
        "lanes": options.lanes,
        "startup_timeout": options.startup_timeout,
        "phase_timeout": options.phase_timeout,
        "redis_url": ctx.redis.url,
        **extra,
    }
    out = ctx.tmp / f"{system.key}-result.json"
    cmd = [sys.executable, str(BENCH / "_peers_client.py"), system.client, json.dumps(args)]
    process = ctx.processes.start(f"{system.key}-client", [*cmd, str(out)], env=ctx.peer_env())
    # Warm-up, throughput and latency each have their own deadline inside the
    # client; this one only catches a client that hangs outside of them.
    limit = options.startup_timeout + 3 * options.phase_timeout + 60
    try:
        process.wait(limit)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"client did not finish within {limit:.0f}s") from None
    result: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    if process.returncode != 0 or "error" in result:
        error = result.get("error") or f"client exited with {process.returncode}"
        raise RuntimeError(f"{error}; client log: {ctx.processes.log_of(process)}")
    return result


def bench_system(ctx: Context, options: argparse.Namespace, system: System) -> dict[str, Any]:
    """Fresh workers, one client process, an empty Redis database before and after."""
    ctx.redis.flush()
    started = time.perf_counter()
    try:
        with ctx.processes.scope():
            extra = system.start(ctx, system.key)
            extra["process_groups"] = ctx.processes.groups()
            extra["uses_redis"] = system.uses_redis
            result = run_client(ctx, options, system, extra)
            ctx.processes.check_alive()
    finally:
        ctx.redis.flush()
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    return result


# ---------------------------------------------------------------------------
# Command line


def missing_modules(systems: list[System]) -> list[str]:
    needed = {module for system in systems for module in system.needs}
    needed |= {"redis", "matplotlib"}
    return sorted(m for m in needed if importlib.util.find_spec(m) is None)


def installed(systems: list[System]) -> list[System]:
    """The systems to run: an optional one is left out, with a note, when it is missing."""
    chosen = []
    for system in systems:
        if system.optional and missing_modules([system]):
            print(f"== {system.key} is not installed, left out ({system.optional})", flush=True)
        else:
            chosen.append(system)
    return chosen


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"systems: {', '.join(BY_KEY)}",
    )
    parser.add_argument("--quick", action="store_true", help="scale the counts down ~10x")
    parser.add_argument("--tasks", type=int, help="no-op tasks per system (default 40,000)")
    parser.add_argument("--latency-tasks", type=int, help="sequential tasks (default 500)")
    parser.add_argument(
        "--bulk-tasks", type=int, help="tasks of the submit_batch phase (default 20,000)"
    )
    parser.add_argument(
        "--workers", type=int, default=8, help="N: threads of every worker pool (default 8)"
    )
    parser.add_argument(
        "--lanes", type=int, default=8, help="client threads that submit and wait (default 8)"
    )
    parser.add_argument("--only", help="comma-separated systems to run (default: all)")
    parser.add_argument("--redis-host", default="127.0.0.1")
    parser.add_argument("--redis-port", type=int, default=6379)
    parser.add_argument(
        "--redis-db", type=int, default=15, help="emptied between systems (default 15)"
    )
    parser.add_argument(
        "--out-dir", type=Path, help="default bench/results/, or .bench/ with --quick"
    )
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="only rewrite the table, chart and section"
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=60.0,
        help="seconds for workers to come up (default 60)",
    )
    parser.add_argument(
        "--phase-timeout", type=float, default=300.0, help="seconds per phase (default 300)"
    )
    options = parser.parse_args(argv)
    keys = [k.strip() for k in (options.only or ",".join(BY_KEY)).split(",") if k.strip()]
    unknown = [k for k in keys if k not in BY_KEY]
    if unknown:
        parser.error(f"unknown systems: {', '.join(unknown)}; known: {', '.join(BY_KEY)}")
    options.systems = [BY_KEY[k] for k in keys]
    base = QUICK if options.quick else FULL
    options.settings = Settings(
        tasks=options.tasks or base.tasks,
        warmup_tasks=base.warmup_tasks,
        latency_tasks=options.latency_tasks or base.latency_tasks,
        latency_warmup=base.latency_warmup,
        bulk_tasks=options.bulk_tasks or base.bulk_tasks,
    )
    if options.out_dir is None:
        options.out_dir = (ROOT / ".bench") if options.quick else (BENCH / "results")
    return options


def command_line(argv: list[str]) -> str:
    return shlex.join([".venv/bin/python", "bench/peers.py", *argv])


@contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C does, so every worker process is stopped."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str]) -> int:
    options = parse_args(argv)
    if options.render:
        # Only the report again, from a finished run's JSON.
        write_outputs(json.loads(options.render.read_text()), options.render.parent)
        return 0
    options.systems = installed(options.systems)
    missing = missing_modules(options.systems)
    if missing:
        print(
            f"error: missing {', '.join(missing)}; install the benchmark extra: {INSTALL_HINT}",
            file=sys.stderr,
        )
        return 2
    redis = RedisDb(options.redis_host, options.redis_port, options.redis_db)
    try:
        keys = redis.keys()
    except Exception as exc:
        print(f"error: no Redis at {redis.url}: {exc}", file=sys.stderr)
        return 2
    if keys:
        print(
            f"error: Redis database {options.redis_db} holds {keys} keys and would be "
            "emptied; pick an empty one with --redis-db",
            file=sys.stderr,
        )
        return 2
    options.out_dir.mkdir(parents=True, exist_ok=True)
    log_dir = ROOT / ".bench" / "peers-logs"  # one log per process, from the last run
    log_dir.mkdir(parents=True, exist_ok=True)
    facts = machine_facts(redis.facts(), options)
    facts["command"] = command_line(argv)
    results: dict[str, Any] = {}
    started = time.perf_counter()
    with (
        terminate_on_sigterm(),
        tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp,
        Processes(log_dir) as processes,
    ):
        ctx = Context(processes, redis, Path(tmp), options.workers, options.startup_timeout)
        facts["sqlite_filesystem"] = filesystem_of(Path(tmp))
        for system in options.systems:
            label = system.label.format(n=options.workers)
            print(f"== {label}: {system.setup.format(n=options.workers)}", flush=True)
            try:
                results[system.key] = bench_system(ctx, options, system)
            except Exception as exc:  # one broken system must not hide the others
                message = f"{type(exc).__name__}: {exc}"
                results[system.key] = {"error": message}
                print(f"   failed: {message}", flush=True)
                print(f"   logs: {log_dir.relative_to(ROOT)}/{system.key}*.log", flush=True)
                continue
            print("   " + summarize(results[system.key]), flush=True)
    facts["seconds"] = round(time.perf_counter() - started, 1)
    facts["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    report = {
        "machine": facts,
        "settings": {
            **options.settings.__dict__,
            "workers": options.workers,
            "lanes": options.lanes,
            "quick": options.quick,
        },
        "systems": [
            {
                "key": s.key,
                "label": s.label.format(n=options.workers),
                "setup": s.setup.format(n=options.workers),
            }
            for s in options.systems
        ],
        "results": results,
    }
    write_outputs(report, options.out_dir)
    return 1 if any("error" in r for r in results.values()) else 0


def write_outputs(report: dict[str, Any], out_dir: Path) -> None:
    """The Markdown table (printed too), the JSON, the chart and the Markdown section."""
    markdown, tables = render_markdown(report)
    report["table"] = tables
    print()
    print(markdown)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "peers.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    render_chart(report, tables["systems"], out_dir / "peers.png")
    (out_dir / "peers.md").write_text(markdown)
    print(f"\nwritten: {json_path} and peers.png, peers.md beside it")


if __name__ == "__main__":
    # Ctrl-C must reach the benchmark even when started from a shell that ignores it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("\ninterrupted; every process the benchmark started was stopped", file=sys.stderr)
        sys.exit(130)
