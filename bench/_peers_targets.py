"""The figures bench/peers.py judges, with their targets, from a run's results."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Rows = dict[str, dict[str, Any]]
"""Table rows by system key: the systems' rows and, under "bulk:KEY", the bulk rows."""


def complete_rate(result: dict[str, Any] | None) -> float | None:
    """Tasks/s, only when every task of both phases completed with the right result."""
    if not result or "error" in result:
        return None
    put, lat = result["throughput"], result["latency"]
    if put["completed"] != put["tasks"] or lat["completed"] != lat["tasks"]:
        return None
    rate: float = put["rate"]
    return rate


def bulk_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per system that ran the bulk phase."""
    rows = []
    for system in report["systems"]:
        bulk = report["results"].get(system["key"], {}).get("bulk")
        if not bulk:
            continue
        complete = bulk["completed"] == bulk["tasks"]
        cpu = bulk.get("cpu_ms_per_task")
        rows.append(
            {
                "key": system["key"],
                "label": system["label"].split(",")[0],
                "tasks": bulk["tasks"],
                "batch_size": bulk["batch_size"],
                "submit_rate": bulk["submit_rate"] if complete else None,
                "rate": bulk["rate"] if complete else None,
                "cpu_ms_per_task": sum(cpu.values()) if cpu and complete else None,
                "note": "" if complete else f"{bulk['completed']:,}/{bulk['tasks']:,}",
            }
        )
    return rows


@dataclass(frozen=True)
class Target:
    figure: str
    measure: Callable[[Rows], float | None]
    limit: float
    at_least: bool
    """True for a floor (tasks/s, ratios), False for a ceiling (CPU, latency)."""
    unit: str

    def shown(self, value: float) -> str:
        if self.unit == "x":
            return f"{value:.2f}x"
        if self.unit == "ms":
            return f"{value:.2f} ms"
        return f"{value:,.0f} {self.unit}"

    @property
    def text(self) -> str:
        limit = f"{self.limit:,g}{'x' if self.unit == 'x' else ' ' + self.unit}"
        return f"{'>=' if self.at_least else '<='} {limit}"


def field_of(key: str, name: str) -> Callable[[Rows], float | None]:
    def measure(rows: Rows) -> float | None:
        value: float | None = rows.get(key, {}).get(name)
        return value

    return measure


def vs_dramatiq(key: str) -> Callable[[Rows], float | None]:
    return field_of(key, "vs_dramatiq")


TARGETS = (
    Target(
        "memory, sync `Client`: tasks/s vs Dramatiq",
        vs_dramatiq("conveyor-memory"),
        3.0,
        True,
        "x",
    ),
    Target(
        "Redis (API + 1 worker): tasks/s vs Dramatiq",
        vs_dramatiq("conveyor-redis"),
        2.0,
        True,
        "x",
    ),
    Target("SQLite: tasks/s vs Dramatiq", vs_dramatiq("conveyor-sqlite"), 2.0, True, "x"),
    Target(
        "CPU per task, memory, sync `Client`, all processes",
        field_of("conveyor-memory", "cpu_ms_per_task"),
        0.4,
        False,
        "ms",
    ),
    Target(
        "p50 submit-to-result, one in flight, memory",
        field_of("conveyor-memory", "p50_ms"),
        1.0,
        False,
        "ms",
    ),
    Target(
        "p50 submit-to-result, one in flight, Redis",
        field_of("conveyor-redis", "p50_ms"),
        1.5,
        False,
        "ms",
    ),
    Target(
        "bulk (`submit_batch`) Redis: tasks/s, submit to last result",
        field_of("bulk:conveyor-redis", "rate"),
        20_000,
        True,
        "tasks/s",
    ),
)


def target_rows(systems: list[dict[str, Any]], bulk: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows: Rows = {row["key"]: row for row in systems}
    rows |= {f"bulk:{row['key']}": row for row in bulk}
    verdicts = []
    for target in TARGETS:
        value = target.measure(rows)
        passed = None
        if value is not None:
            passed = value >= target.limit if target.at_least else value <= target.limit
        verdicts.append(
            {
                "figure": target.figure,
                "value": value,
                "measured": "n/a" if value is None else target.shown(value),
                "target": target.text,
                "passed": passed,
            }
        )
    return verdicts
