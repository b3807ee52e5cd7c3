"""Report of bench/peers.py: machine facts, the Markdown table and section, the chart."""

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
from _peers_systems import BY_KEY

PACKAGES = (
    "conveyor",
    "grpcio",
    "protobuf",
    "uvloop",
    "celery",
    "kombu",
    "rq",
    "dramatiq",
    "redis",
    "hiredis",
    "matplotlib",
)

# Throughput targets: system -> (reference system, minimum ratio).
TARGETS: dict[str, tuple[tuple[str, float], ...]] = {
    "conveyor-memory": (("celery", 4.0), ("dramatiq", 1.3)),
    "conveyor-redis": (("celery", 2.0),),
    "conveyor-sqlite": (("celery", 1.0),),
}
REFERENCE = "celery"
ROOT = Path(__file__).resolve().parent.parent


def machine_facts(redis: dict[str, Any], options: argparse.Namespace) -> dict[str, Any]:
    versions = {}
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
    if failures:
        line += f"; {failures} FAILURES: {(put['failure_samples'] + lat['failure_samples'])[:2]}"
    return line


def complete_rate(result: dict[str, Any] | None) -> float | None:
    """Tasks/s, only when every task of both phases completed with the right result."""
    if not result or "error" in result:
        return None
    put, lat = result["throughput"], result["latency"]
    if put["completed"] != put["tasks"] or lat["completed"] != lat["tasks"]:
        return None
    rate: float = put["rate"]
    return rate


def table_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    results = report["results"]
    reference = complete_rate(results.get(REFERENCE))
    rows = []
    for system in report["systems"]:
        key = system["key"]
        result = results.get(key, {})
        rate = complete_rate(result)
        row: dict[str, Any] = {
            "key": key,
            "label": system["label"],
            "rate": rate,
            "vs_celery": rate / reference if rate and reference else None,
            "p50_ms": None,
            "p99_ms": None,
            "cpu_ms_per_task": None,
            "note": "",
            "targets": [],
        }
        if "error" in result:
            # The cause without the log excerpt, and nothing that breaks a table cell.
            cause = result["error"].split("; client log:")[0].splitlines()[0]
            row["note"] = "failed: " + cause[:160].replace("|", "/")
        elif result:
            put, lat = result["throughput"], result["latency"]
            row["p50_ms"], row["p99_ms"] = lat.get("p50_ms"), lat.get("p99_ms")
            cpu = put.get("cpu_ms_per_task")
            row["cpu_ms_per_task"] = sum(cpu.values()) if cpu and rate else None
            row["note"] = (
                f"{put['completed']:,}/{put['tasks']:,} + {lat['completed']}/{lat['tasks']}"
            )
            if rate is None:
                row["note"] += " INCOMPLETE"
        for other, ratio in TARGETS.get(key, ()):
            other_rate = complete_rate(results.get(other))
            verdict = None
            if rate and other_rate:
                verdict = rate / other_rate >= ratio
            label = BY_KEY[other].label
            row["targets"].append(
                {
                    "target": f">= {ratio:g}x {label}",
                    "passed": verdict,
                    "ratio": rate / other_rate if rate and other_rate else None,
                }
            )
        rows.append(row)
    return rows


def fmt(value: float | None, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{suffix}"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| system | tasks/s | vs Celery | CPU per task | p50 latency | p99 latency | target | verdict |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for row in rows:
        targets = row["targets"] or [{"target": "", "passed": None, "ratio": None}]
        for number, target in enumerate(targets):
            verdict = {True: "pass", False: "**miss**", None: ""}[target["passed"]]
            if target["ratio"] is not None and target["passed"] is not None:
                verdict += f" ({target['ratio']:.2f}x)"
            if target["target"] and target["passed"] is None:
                verdict = "n/a"
            if number == 0:
                cells = [
                    row["label"],
                    fmt(row["rate"]),
                    fmt(row["vs_celery"], 2, "x"),
                    fmt(row["cpu_ms_per_task"], 2, " ms"),
                    fmt(row["p50_ms"], 2, " ms"),
                    fmt(row["p99_ms"], 2, " ms"),
                ]
                if row["rate"] is None and row["note"]:
                    cells[1] = f"n/a ({row['note']})"
            else:
                cells = ["", "", "", "", "", ""]
            lines.append("| " + " | ".join([*cells, target["target"], verdict]) + " |")
    return "\n".join(lines)


def cpu_line(report: dict[str, Any], system: dict[str, Any]) -> str:
    result = report["results"].get(system["key"], {})
    cpu = result.get("throughput", {}).get("cpu_ms_per_task")
    if not cpu or complete_rate(result) is None:
        return f"{system['label']} n/a"
    return f"{system['label']} " + " + ".join(f"{value:.2f}" for value in cpu.values()) + " ms"


def render_markdown(report: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    rows = table_rows(report)
    machine, settings = report["machine"], report["settings"]
    packages = machine["packages"]
    redis = machine["redis"]
    n = settings["workers"]
    quick = " (QUICK run: a smoke test, not numbers to judge)" if settings["quick"] else ""
    versions = ", ".join(f"{name} {version}" for name, version in packages.items() if version)
    setups = "\n".join(f"- **{s['label']}**: {s['setup']}." for s in report["systems"])
    targets = "; ".join(
        f"{BY_KEY[key].label} {' and '.join(f'>= {ratio:g}x {BY_KEY[other].label}' for other, ratio in pairs)}"
        for key, pairs in TARGETS.items()
    )
    cpu_split = "; ".join(cpu_line(report, system) for system in report["systems"])
    load = " / ".join(f"{x:g}" for x in machine["load_average_before"])
    text = f"""### Compared with Celery, RQ and Dramatiq{quick}

`bench/peers.py` runs Conveyor and three Python task queues side by
side, in one run, on one machine, against the same local Redis server. Each
system completes the same {settings["tasks"]:,} no-op tasks, submitted one per
call through its own client API, and every result is fetched and checked.
Reproduce with (the extra `bench` installs Celery, RQ, Dramatiq and
matplotlib; a Redis server must listen on 127.0.0.1:6379):

```sh
.venv/bin/pip install -e '.[bench]'
{machine["command"]}
```

{markdown_table(rows)}

![Tasks/s and latency of Conveyor, Celery, RQ and Dramatiq](peers.png)

- **tasks/s**: {settings["tasks"]:,} tasks, from the first submit to the last
  result observed. A system that lost, failed or timed out on any task gets none.
- **CPU per task**: CPU time used during the tasks/s phase by the system's
  processes, the client process and the Redis server, divided by the tasks.
  Steadier than tasks/s on a shared machine: with C cores, tasks/s cannot
  exceed C / (CPU per task). Redis counts only for the systems that use it,
  and its share includes anything else that used that Redis server meanwhile.
- **latency**: submit-to-result with one task in flight, over
  {settings["latency_tasks"]} sequential tasks (after {settings["latency_warmup"]} unmeasured ones).
- **targets**: {targets}. Rows without a target are for comparison.

Where the CPU went, per task, in the tasks/s phase (the system's own
processes + the client + Redis): {cpu_split}.

Set-up:

- Machine: {machine["cores"]} cores ({machine["cpu"]}), {fmt(machine["memory_gib"], 1)} GiB of memory;
  load average {load} when the run started (other work shared the machine);
  the run took {machine["seconds"]:.0f} s.
- Python {machine["python"]}; Redis {redis["version"]}, persistence off (save "{redis["save"]}",
  appendonly {redis["appendonly"]}), database {redis["db"]}; the SQLite file on {machine.get("sqlite_filesystem", "unknown")}.
- {versions}; Conveyor at commit {machine["conveyor_revision"]}.

How each system runs. N = {n} worker threads wherever there is a pool. Each
system's workers are started fresh in their own processes, logging at
WARNING; the client is one more process.

{setups}

How the client submits and observes completion: {settings["lanes"]} client threads
start together; each submits its share of the tasks, one call per task, then
waits for each of its tasks in submit order with the system's own wait call
and checks the result:

- **Conveyor**: `Client.submit("sleep", {{"seconds": 0}})` (the built-in
  no-op; one `SubmitTask` call), then `TaskHandle.wait()` (one `GetTask`
  call, and a `WatchTask` stream only if the task has not finished yet);
  checks `SUCCEEDED` and the
  result `{{"slept": 0.0}}`. One `Client` (one gRPC channel) for all threads.
- **Celery**: `noop.delay(i)`, then `AsyncResult.get()` (the Redis result
  backend delivers results by pub/sub); checks that it returned `i`.
- **RQ**: `Queue.enqueue(noop, i)`, then `Job.latest_result(timeout=...)` (a
  blocking `XREAD` on the job's result stream); checks `SUCCESSFUL` and `i`.
- **Dramatiq**: `noop.send(i)`, then `Message.get_result(block=True)` (a
  blocking `BRPOPLPUSH` on the result key); checks that it returned `i`.

Before the measured phases each system runs one task (which waits for its
workers to come up) and {settings["warmup_tasks"]} warm-up tasks. The Redis
database is emptied with `FLUSHDB` before and after each system. All processes
share the machine's {machine["cores"]} cores: client, workers and Redis compete
for them, and a system with more processes gets no more CPU. Conveyor (memory)
keeps its tasks in the server process; the others keep them in Redis.
"""
    return text, rows


def render_chart(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report.get("table") or table_rows(report)
    labels = [row["label"].replace(" (", "\n(").replace(", ", ",\n") for row in rows]
    colors = ["#1f6feb" if row["key"].startswith("conveyor") else "#8b949e" for row in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5))
    rates = [row["rate"] or 0 for row in rows]
    bars = left.bar(labels, rates, color=colors)
    for bar, row in zip(bars, rows, strict=True):
        text = "n/a" if row["rate"] is None else f"{row['rate']:,.0f}"
        if row["vs_celery"] is not None:
            text += f"\n{row['vs_celery']:.2f}x Celery"
        left.annotate(
            text,
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    left.set_ylabel("completed no-op tasks/s")
    left.set_title(f"Throughput, {report['settings']['tasks']:,} tasks (higher is better)")
    left.set_ylim(0, max([*rates, 1]) * 1.25)
    left.tick_params(axis="x", labelsize=8)

    positions = range(len(rows))
    width = 0.4
    p50 = [row["p50_ms"] or 0 for row in rows]
    p99 = [row["p99_ms"] or 0 for row in rows]
    right.bar([p - width / 2 for p in positions], p50, width, label="p50", color=colors)
    right.bar([p + width / 2 for p in positions], p99, width, label="p99", color=colors, alpha=0.45)
    for p, (low, high) in enumerate(zip(p50, p99, strict=True)):
        for x, value in ((p - width / 2, low), (p + width / 2, high)):
            if value:
                right.annotate(f"{value:.1f}", (x, value), ha="center", va="bottom", fontsize=7)
    right.set_xticks(list(positions), labels)
    right.tick_params(axis="x", labelsize=8)
    right.set_ylabel("submit-to-result latency, ms")
    right.set_title("Latency, one task in flight (p50 solid, p99 light; lower is better)")
    if max([*p99, 0]) > 20 * min([v for v in p50 if v] or [1]):
        right.set_yscale("log")
    machine = report["machine"]
    quick = "  QUICK RUN" if report["settings"]["quick"] else ""
    figure.suptitle(
        f"Conveyor vs Celery, RQ, Dramatiq: {machine['cores']} cores, Python "
        f"{machine['python']}, Redis {machine['redis']['version']}, "
        f"N={report['settings']['workers']} worker threads{quick}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
