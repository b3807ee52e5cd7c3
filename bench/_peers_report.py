"""Report of bench/peers.py: machine facts, the tables, the verdicts and the Markdown section."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import statistics
import subprocess
from pathlib import Path
from typing import Any

from _core_harness import cpu_model
from _peers_targets import bulk_rows, complete_rate, target_rows

PACKAGES = (
    "conveyor",
    "grpcio",
    "protobuf",
    "uvloop",
    "celery",
    "kombu",
    "rq",
    "dramatiq",
    "arq",
    "redis",
    "hiredis",
    "matplotlib",
)

REFERENCE = "dramatiq"
ROOT = Path(__file__).resolve().parent.parent


def machine_facts(redis: dict[str, Any], options: argparse.Namespace) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model(),
        "memory_gib": memory_gib(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "redis": redis,
        "packages": versions,
        "conveyor_revision": revision(),
        "quick": options.quick,
    }


def revision() -> str | None:
    """The checkout's commit, marked when the product code has changes not in it."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--", "client", "service", "proto")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit} plus uncommitted changes" if changed else commit


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def filesystem_of(path: Path) -> str:
    """The type of the file system holding `path` (ext4, tmpfs...), from /proc/mounts."""
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            mount = fields[1]
            inside = str(path).startswith(mount.rstrip("/") + "/") or str(path) == mount
            if len(fields) > 2 and inside and len(mount) > len(best):
                best, kind = mount, fields[2]
    except OSError:
        pass
    return kind


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def latency_summary(latency: dict[str, Any]) -> dict[str, Any]:
    samples = latency.pop("samples_ms", [])
    if samples:
        latency.update(
            p50_ms=statistics.median(samples),
            p90_ms=percentile(samples, 0.90),
            p99_ms=percentile(samples, 0.99),
            max_ms=max(samples),
            mean_ms=statistics.fmean(samples),
        )
    return latency


def summarize(result: dict[str, Any]) -> str:
    """One line for the console; also folds the latency samples into percentiles."""
    put = result["throughput"]
    lat = latency_summary(result["latency"])
    line = (
        f"{put['completed']:,}/{put['tasks']:,} tasks in {put['seconds']:.2f}s = "
        f"{put['rate'] or 0:,.0f} tasks/s (submits took {put['submit_seconds']:.2f}s)"
    )
    cpu = put.get("cpu_ms_per_task")
    if cpu:
        parts = ", ".join(f"{name} {value:.2f}" for name, value in cpu.items())
        line += f"; CPU {sum(cpu.values()):.2f} ms/task ({parts})"
    if "p50_ms" in lat:
        line += f"; latency p50 {lat['p50_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms"
    failures = put["failures"] + lat["failures"]
    if "bulk" in result:
        bulk = result["bulk"]
        failures += bulk["failures"]
        line += (
            f"; bulk {bulk['completed']:,}/{bulk['tasks']:,}: submitted at "
            f"{bulk['submit_rate'] or 0:,.0f} tasks/s, completed at {bulk['rate'] or 0:,.0f}"
        )
    samples = (
        put["failure_samples"]
        + lat["failure_samples"]
        + result.get("bulk", {}).get("failure_samples", [])
    )
    if failures:
        line += f"; {failures} FAILURES: {samples[:2]}"
    return line


def table_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per system: tasks/s, the ratio to Dramatiq, CPU per task by part, latency."""
    results = report["results"]
    reference = complete_rate(results.get(REFERENCE))
    rows = []
    for system in report["systems"]:
        result = results.get(system["key"], {})
        rate = complete_rate(result)
        row: dict[str, Any] = {
            "key": system["key"],
            "label": system["label"],
            "rate": rate,
            "vs_dramatiq": rate / reference if rate and reference else None,
            "cpu_ms_per_task": None,
            "cpu_client_ms": None,
            "cpu_workers_ms": None,
            "cpu_redis_ms": None,
            "p50_ms": None,
            "p99_ms": None,
            "note": "",
        }
        if "error" in result:
            # The cause without the log excerpt, and nothing that breaks a table cell.
            cause = result["error"].split("; client log:")[0].splitlines()[0]
            row["note"] = "failed: " + cause[:160].replace("|", "/")
        elif result:
            put, lat = result["throughput"], result["latency"]
            row["p50_ms"], row["p99_ms"] = lat.get("p50_ms"), lat.get("p99_ms")
            cpu = put.get("cpu_ms_per_task")
            if cpu and rate:
                row["cpu_ms_per_task"] = sum(cpu.values())
                row["cpu_client_ms"] = cpu.get("client")
                row["cpu_workers_ms"] = cpu.get("workers")
                row["cpu_redis_ms"] = cpu.get("redis")
            row["note"] = (
                f"{put['completed']:,}/{put['tasks']:,} + {lat['completed']}/{lat['tasks']}"
            )
            if rate is None:
                row["note"] += " INCOMPLETE"
        rows.append(row)
    return rows


def fmt(value: float | None, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{suffix}"


def systems_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| system | tasks/s | vs Dramatiq | CPU per task | client | server + workers | Redis "
        "| p50, one in flight | p99, one in flight |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        rate = fmt(row["rate"])
        if row["rate"] is None and row["note"]:
            rate = f"n/a ({row['note']})"
        cells = [
            row["label"],
            rate,
            fmt(row["vs_dramatiq"], 2, "x"),
            fmt(row["cpu_ms_per_task"], 2, " ms"),
            fmt(row["cpu_client_ms"], 2, " ms"),
            fmt(row["cpu_workers_ms"], 2, " ms"),
            ""
            if row["cpu_ms_per_task"] and row["cpu_redis_ms"] is None
            else fmt(row["cpu_redis_ms"], 2, " ms"),
            fmt(row["p50_ms"], 2, " ms"),
            fmt(row["p99_ms"], 2, " ms"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bulk_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| system | tasks | submitted, tasks/s | completed, tasks/s | CPU per task |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        cells = [
            row["label"],
            fmt(row["tasks"]),
            fmt(row["submit_rate"]),
            fmt(row["rate"]) if row["rate"] is not None else f"n/a ({row['note']})",
            fmt(row["cpu_ms_per_task"], 3, " ms"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| figure | measured | target | verdict |", "| --- | ---: | ---: | --- |"]
    for row in rows:
        verdict = {True: "pass", False: "**miss**", None: "n/a"}[row["passed"]]
        lines.append(f"| {row['figure']} | {row['measured']} | {row['target']} | {verdict} |")
    return "\n".join(lines)


def render_markdown(report: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    rows = table_rows(report)
    bulk = bulk_rows(report)
    targets = target_rows(rows, bulk)
    machine, settings = report["machine"], report["settings"]
    packages = machine["packages"]
    redis = machine["redis"]
    n = settings["workers"]
    lanes = settings["lanes"]
    tasks = settings["tasks"]
    quick = " (QUICK run: a smoke test, not numbers to judge)" if settings["quick"] else ""
    versions = ", ".join(f"{name} {version}" for name, version in packages.items() if version)
    setups = "\n".join(f"- **{s['label']}**: {s['setup']}." for s in report["systems"])
    load = " / ".join(f"{x:g}" for x in machine["load_average_before"])
    bulk_section = ""
    if bulk:
        bulk_section = f"""
Bulk: one client thread submits {bulk[0]["tasks"]:,} no-op tasks with
`Client.submit_batch`, {bulk[0]["batch_size"]:,} per call (the most one
`BatchSubmitTasks` call takes), then waits for each with `TaskHandle.wait()`;
"submitted" counts until the last batch is acknowledged, "completed" until the
last result is read. Run on the same server, after the other phases.

{bulk_table(bulk)}
"""
    text = f"""### Compared with Dramatiq, Celery, RQ and arq{quick}

`bench/peers.py` runs Conveyor and four Python task queues side by side, in
one run, on one machine, against the same local Redis server. Each system
completes the same {tasks:,} no-op tasks ({lanes} client lanes x
{tasks // max(lanes, 1):,}), submitted one per call through its own client API,
and every result is fetched and checked. Reproduce with (the extra `bench`
installs Celery, RQ, Dramatiq and matplotlib; arq, which requires an older
redis-py than Conveyor's Redis store runs on, is installed apart and without
its dependencies; a Redis server must listen on 127.0.0.1:6379):

```sh
.venv/bin/pip install -e '.[bench]'
.venv/bin/pip install --no-deps arq
{machine["command"]}
```

{systems_table(rows)}

Against the targets (ratios to Dramatiq from this run):

{targets_table(targets)}
{bulk_section}
![Tasks/s and latency of Conveyor, Dramatiq, Celery, RQ and arq](peers.png)

- **tasks/s**: {tasks:,} tasks, from the first submit to the last result
  observed. A system that lost, failed or timed out on any task gets none.
- **CPU per task**: CPU time used during the tasks/s phase, divided by the
  tasks, split into the client process, the system's own processes (Conveyor's
  server and worker, the peers' workers) and the Redis server. Steadier than
  tasks/s on a shared machine: with C cores, tasks/s cannot exceed
  C / (CPU per task). Redis counts only for the systems that use it, and its
  share includes anything else that used that Redis server meanwhile.
- **p50, p99**: submit-to-result with one task in flight, over
  {settings["latency_tasks"]} sequential tasks (after {settings["latency_warmup"]} unmeasured ones).

Set-up:

- Machine: {machine["cores"]} cores ({machine["cpu"]}), {fmt(machine["memory_gib"], 1)} GiB of memory;
  load average {load} when the run started (other work shared the machine);
  the run took {machine["seconds"]:.0f} s.
- Python {machine["python"]}; Redis {redis["version"]}, persistence off (save "{redis["save"]}",
  appendonly {redis["appendonly"]}), database {redis["db"]}; the SQLite file on {machine.get("sqlite_filesystem", "unknown")}.
- {versions}; Conveyor at commit {machine["conveyor_revision"]}.

How each system runs. N = {n} worker threads (or concurrent jobs) wherever
there is a pool. Each system's workers are started fresh in their own
processes, logging at WARNING; the client is one more process.

{setups}

How the client submits and observes completion: {lanes} client threads start
together (for the asyncio clients, `AsyncClient` and arq, {lanes} coroutines on
one event loop); each submits its share of the tasks, one call per task, then
waits for each of its tasks in submit order with the system's own wait call and
checks the result:

- **Conveyor**: `Client.submit("sleep", {{"seconds": 0}})` (the built-in
  no-op), then `TaskHandle.wait()`; checks `SUCCEEDED` and the result
  `{{"slept": 0.0}}`. One `Client` for all threads (one `AsyncClient` for
  all coroutines), used as any application would: the SDK decides how the
  submits and waits travel.
- **Dramatiq**: `noop.send(i)`, then `Message.get_result(block=True)` (a
  blocking `BRPOPLPUSH` on the result key); checks that it returned `i`.
- **Celery**: `noop.delay(i)`, then `AsyncResult.get()` (the Redis result
  backend delivers results by pub/sub); checks that it returned `i`.
- **RQ**: `Queue.enqueue(noop, i)`, then `Job.latest_result(timeout=...)` (a
  blocking `XREAD` on the job's result stream); checks `SUCCESSFUL` and `i`.
- **arq**: `await pool.enqueue_job("noop", i)`, then `await job.result()`
  (which polls Redis); checks that it returned `i`.

Before the measured phases each system runs one task (which waits for its
workers to come up) and {settings["warmup_tasks"]} warm-up tasks. The Redis
database is emptied with `FLUSHDB` before and after each system. All processes
share the machine's {machine["cores"]} cores: client, workers and Redis compete
for them, and a system with more processes gets no more CPU. Conveyor memory
keeps its tasks in the server process; the others keep them in Redis or SQLite.
"""
    return text, {"systems": rows, "bulk": bulk, "targets": targets}
