"""Client side of bench/peers.py: drives one system, writes the result as JSON.

Run by peers.py, not by hand:

    python bench/_peers_client.py ADAPTER '{"tasks": 40000, ...}' RESULT.json

ADAPTER names one of _peers_adapters.ADAPTERS. The phases (_peers_phases)
run in threads for a thread adapter and in coroutines on one event loop for
an asyncio one. During the throughput and bulk phases the client also reads
the CPU time of the system's processes (their process groups), of itself, and
of Redis when the system uses it.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import traceback
from pathlib import Path
from typing import Any

from _peers_adapters import ADAPTERS
from _peers_phases import bulk, latency, throughput, warm_up

# ---------------------------------------------------------------------------
# CPU accounting: on a shared machine, CPU seconds per task are steadier than
# tasks/s, and they show where the work goes.

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def group_cpu_seconds(groups: set[int]) -> float:
    """User + system CPU of every live process in these process groups."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) in groups:  # pgrp; utime and stime follow at 11 and 12
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


class CpuMeter:
    """CPU seconds of this client, of the system's processes, and of Redis if it is used."""

    def __init__(self, args: dict[str, Any]) -> None:
        import redis

        self._groups = set(args["process_groups"])
        # Only for systems that use Redis: for the others its CPU is other work.
        self._redis = redis.Redis.from_url(args["redis_url"]) if args["uses_redis"] else None

    def snapshot(self) -> dict[str, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        cpu = {
            "client": usage.ru_utime + usage.ru_stime,
            "workers": group_cpu_seconds(self._groups),
        }
        if self._redis is not None:
            info = self._redis.info("cpu")
            cpu["redis"] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return cpu

    def per_task_ms(self, before: dict[str, float], tasks: int) -> dict[str, float]:
        after = self.snapshot()
        return {name: round((after[name] - before[name]) * 1000 / tasks, 4) for name in before}

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()


def run(name: str, args: dict[str, Any]) -> dict[str, Any]:
    adapter = ADAPTERS[name](args)
    meter = CpuMeter(args)
    # An asyncio adapter runs every phase on this one loop, as its users would.
    loop = asyncio.new_event_loop() if adapter.asynchronous else None
    try:
        if loop is not None:
            loop.run_until_complete(adapter.open())
        result: dict[str, Any] = {"warmup": warm_up(adapter, args, loop)}
        result["throughput"] = throughput(
            adapter, args["tasks"], args["lanes"], args["phase_timeout"], loop, meter
        )
        result["latency"] = latency(
            adapter, args["latency_tasks"], args["latency_warmup"], args["phase_timeout"], loop
        )
        if args.get("bulk_tasks"):
            result["bulk"] = bulk(adapter, args["bulk_tasks"], args["phase_timeout"], meter)
        return result
    finally:
        meter.close()
        if loop is None:
            adapter.close()
        else:
            loop.run_until_complete(adapter.close())
            loop.close()


def main() -> None:
    name, raw, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    try:
        result = run(name, json.loads(raw))
    except SystemExit as exc:
        out.write_text(json.dumps({"error": str(exc)}))
        raise
    except Exception as exc:
        out.write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        traceback.print_exc()
        raise SystemExit(1) from None
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
