"""Benchmark Conveyor against its targets, in one run on one machine.

Usage:
    .venv/bin/python bench/core.py [--quick] [--only a,b,...] [--out FILE]

Parts (each starts its own fresh server subprocess; clients are separate processes):
  a  SubmitTask calls/s against a bare grpc.aio echo server with Conveyor's own
     server options and event loop, same client harness and request bytes
  b  end-to-end no-op (sleep 0) tasks/s: one task per SubmitTask, then 1,000 per
     BatchSubmitTasks, timed until every task has finished
  c  submit-to-result latency with one task in flight (SubmitTask, then WatchTask)
  d  server memory per open WatchTask stream
  e  fan-out delay: many watchers on one task that reports progress every 100 ms
  f  server memory per retained finished task, at 1,000,000 tasks

Prints machine facts and a Markdown table with each target and pass/miss, and
writes everything to --out as JSON. --quick scales every count down about 20x
for a smoke run; the numbers it gives are not the ones to judge.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from conveyor.v1 import task_pb2, task_service_pb2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _core_client import noop_request
from _core_harness import (
    FULL,
    QUICK,
    ROOT,
    Conveyor,
    Report,
    Scale,
    Server,
    client_result,
    echo_server,
    machine_facts,
    percentile,
    run_client,
    settle,
    start_client,
    stop_all,
    stub_for,
    wait_ready,
)


@dataclass
class Bench:
    options: argparse.Namespace
    scale: Scale
    conveyor: Conveyor
    report: Report
    log_dir: Path

    def part_a(self) -> None:
        """SubmitTask calls/s against echo calls/s, identical harness and bytes."""
        # Delayed by an hour so the runner stays idle: this part measures the RPC path.
        delayed_hex = noop_request(delay_s=3600).SerializeToString().hex()
        harness = {
            "channels": self.options.channels,
            "concurrency": self.options.concurrency,
            "warmup": self.scale.warmup_s,
            "duration": self.scale.duration_s,
        }

        def measure(address: str, method: str, request_hex: str = delayed_hex) -> dict[str, Any]:
            start_at = time.time() + 1.5
            args = {
                **harness,
                "request_hex": request_hex,
                "target": address,
                "method": method,
                "start_at": start_at,
            }
            clients = [start_client("unary-rate", args) for _ in range(self.options.clients)]
            timeout = 60 + self.scale.warmup_s + self.scale.duration_s
            results = [client_result(c, timeout) for c in clients]
            return {
                "rate": sum(r["rate"] for r in results),
                "errors": sum(r["errors"] for r in results),
                "clients": results,
            }

        echo_rounds: list[dict[str, Any]] = []
        submit_rounds: list[dict[str, Any]] = []
        submit = "/conveyor.v1.TaskService/SubmitTask"
        with (
            echo_server(self.log_dir) as (echo, settings),
            self.conveyor.run(max_queue=2_000_000, retention_count=2_000_000) as server,
        ):
            # Alternate the two, so drifting background load hits both alike.
            for _ in range(self.scale.rounds):
                echo_rounds.append(measure(echo.address, "/bench.Echo/Echo"))
                submit_rounds.append(measure(server.address, submit))
            running = measure(server.address, submit, noop_request().SerializeToString().hex())
        self.report.details["echo_server_settings"] = settings
        self.report.details["a"] = {
            "echo": echo_rounds,
            "submit": submit_rounds,
            "submit_tasks_running": running,
        }
        echo_rate = statistics.median(r["rate"] for r in echo_rounds)
        submit_rate = statistics.median(r["rate"] for r in submit_rounds)
        errors = sum(r["errors"] for r in submit_rounds)
        how = (
            f"{self.options.clients} client proc x {self.options.channels} ch x "
            f"{self.options.concurrency} in flight; median of {self.scale.rounds} rounds"
        )
        self.report.add("a", "echo calls/s (baseline)", echo_rate, "calls/s", note=how)
        self.report.add(
            "a",
            "SubmitTask calls/s",
            submit_rate,
            "calls/s",
            note="tasks delayed 1 h, runner idle" + (f"; {errors} errors" if errors else ""),
        )
        ratio = submit_rate / echo_rate if echo_rate else None
        self.report.add("a", "SubmitTask / echo", ratio, "x", at_least=0.85)
        self.report.add(
            "a",
            "SubmitTask calls/s, tasks run at once",
            running["rate"],
            "calls/s",
            note="informative: sleep-0 tasks run meanwhile on the same cores",
        )

    def noop_run(self, tasks: int, batch: int, concurrency: int) -> dict[str, Any]:
        with self.conveyor.run(max_queue=2_000_000, retention_count=tasks + 10_000) as server:
            args = {
                "target": server.address,
                "tasks": tasks,
                "batch": batch,
                "concurrency": concurrency,
                "timeout": self.options.part_timeout,
            }
            return run_client("noop-throughput", args, self.options.part_timeout + 60)

    def part_b(self) -> None:
        """End-to-end no-op tasks/s, one per call and batched."""
        for label, tasks, batch, concurrency, target in (
            ("SubmitTask", self.scale.single_tasks, 1, self.options.concurrency, 2_500),
            ("BatchSubmitTasks x1000", self.scale.batched_tasks, 1000, 4, 25_000),
        ):
            result = self.noop_run(tasks, batch, concurrency)
            self.report.details[f"b {label}"] = result
            if result.get("timed_out"):
                self.report.add(
                    "b", f"no-op tasks/s via {label}", None, "tasks/s", note="timed out"
                )
                continue
            note = f"{result['tasks']:,} tasks in {result['seconds']:.2f}s"
            if result.get("failed"):
                note += f"; {result['failed']} FAILED"
            self.report.add(
                "b",
                f"no-op tasks/s via {label}",
                result["rate"],
                "tasks/s",
                at_least=target,
                note=note,
            )

    def part_c(self) -> None:
        """Submit-to-result latency, one task in flight."""
        with self.conveyor.run() as server:
            args = {
                "target": server.address,
                "tasks": self.scale.latency_tasks,
                "warmup": self.scale.latency_warmup,
            }
            result = run_client("latency", args, self.options.part_timeout)
        samples = result["samples_ms"]
        self.report.details["c"] = {
            "not_succeeded": result["not_succeeded"],
            "samples": len(samples),
            "mean_ms": statistics.fmean(samples) if samples else None,
        }
        note = f"{len(samples):,} sequential tasks"
        if result["not_succeeded"]:
            note += f"; {result['not_succeeded']} did not succeed"
        p50 = statistics.median(samples) if samples else None
        p99 = percentile(samples, 0.99) if samples else None
        self.report.add("c", "submit-to-result p50", p50, "ms", at_most=1.5, note=note)
        self.report.add("c", "submit-to-result p99", p99, "ms")

    def part_d(self) -> None:
        """Server memory per open WatchTask stream."""
        streams = self.scale.idle_streams
        clients = self.options.watch_clients
        with (
            self.conveyor.run() as server,
            self.pending_tasks(server, count=10) as task_ids,
        ):
            settle()
            before = server.rss_kib
            per_client = streams // clients
            args = {
                "target": server.address,
                "task_ids": task_ids,
                "streams": per_client,
                "channels": max(1, self.options.watch_channels // clients),
            }
            processes = [start_client("hold-watches", args) for _ in range(clients)]
            opened = sum(wait_ready(p, self.options.part_timeout) for p in processes)
            settle()
            after = server.rss_kib
            for process in processes:
                assert process.stdin is not None
                process.stdin.write("\n")
                process.stdin.flush()
            for process in processes:
                client_result(process, 60)
        per_stream = (after - before) / opened
        self.report.details["d"] = {
            "rss_before_kib": before,
            "rss_after_kib": after,
            "streams": opened,
        }
        self.report.add(
            "d",
            "server RSS per open WatchTask stream",
            per_stream,
            "KiB",
            at_most=25,
            note=f"{opened:,} streams on 10 pending tasks; RSS {before:,} -> {after:,} KiB",
        )

    @contextmanager
    def pending_tasks(self, server: Server, count: int) -> Iterator[list[str]]:
        """Tasks that stay PENDING (delayed an hour), cancelled on the way out."""
        channel, stub = stub_for(server)
        ids: list[str] = []
        try:
            request = noop_request(delay_s=3600)
            ids = [stub.SubmitTask(request, timeout=10).task.id for _ in range(count)]
            yield ids
        finally:
            for task_id in ids:
                with suppress(grpc.RpcError):
                    stub.CancelTask(task_service_pb2.CancelTaskRequest(id=task_id), timeout=10)
            channel.close()

    def part_e(self) -> None:
        """Fan-out delay: watchers on one sleep task reporting progress every 100 ms."""
        watchers = self.scale.fanout_watchers
        clients = self.options.watch_clients
        start_delay_s = 3
        with self.conveyor.run() as server:
            channel, stub = stub_for(server)
            with channel:
                request = noop_request(delay_s=start_delay_s)
                request.payload["seconds"] = self.scale.fanout_sleep_s
                task_id = stub.SubmitTask(request, timeout=10).task.id
                args = {
                    "target": server.address,
                    "task_ids": [task_id],
                    "streams": watchers // clients,
                    "channels": max(1, min(10, watchers // 100) // clients),
                    "timeout": start_delay_s + self.scale.fanout_sleep_s + 60,
                }
                processes = [start_client("fanout", args) for _ in range(clients)]
                for process in processes:
                    wait_ready(process, self.options.part_timeout)
                state = stub.GetTask(
                    task_service_pb2.GetTaskRequest(id=task_id), timeout=10
                ).task.state
                late = state != task_pb2.TASK_STATE_PENDING
                results = [client_result(p, args["timeout"] + 30) for p in processes]
        delays = [d for r in results for d in r["delays_ms"]]
        finished = sum(r["saw_success"] for r in results)
        self.report.details["e"] = {
            "deliveries": len(delays),
            "watchers_that_saw_success": finished,
            "attached_late": late,
        }
        note = f"{sum(r['streams'] for r in results):,} watchers, {len(delays):,} deliveries"
        if finished != watchers:
            note += f"; only {finished} saw SUCCEEDED"
        if late:
            note += "; watchers attached after the task started"
        p50 = statistics.median(delays) if delays else None
        p99 = percentile(delays, 0.99) if delays else None
        self.report.add("e", "fan-out delay p50", p50, "ms", note=note)
        self.report.add("e", "fan-out delay p99", p99, "ms", at_most=100)

    def part_f(self) -> None:
        """Server memory per retained finished task."""
        tasks = self.scale.retained_tasks
        with self.conveyor.run(
            max_queue=2_000_000, retention_count=2_000_000, retention_period=30 * 24 * 3600
        ) as server:
            settle()
            before = server.rss_kib
            args = {
                "target": server.address,
                "tasks": tasks,
                "batch": 1000,
                "concurrency": 4,
                "timeout": self.options.part_timeout,
            }
            result = run_client("noop-throughput", args, self.options.part_timeout + 60)
            settle(3.0)
            after = server.rss_kib
        if result.get("timed_out"):
            self.report.add("f", "server RSS per retained task", None, "bytes", note="timed out")
            return
        per_task = (after - before) * 1024 / result["tasks"]
        self.report.details["f"] = {
            "rss_before_kib": before,
            "rss_after_kib": after,
            "tasks": result["tasks"],
            "seconds": result["seconds"],
        }
        self.report.add(
            "f",
            "server RSS per retained finished task",
            per_task,
            "bytes",
            at_most=1024,
            note=f"{result['tasks']:,} tasks; RSS {before:,} -> {after:,} KiB",
        )


PARTS: dict[str, Callable[[Bench], None]] = {
    "a": Bench.part_a,
    "b": Bench.part_b,
    "c": Bench.part_c,
    "d": Bench.part_d,
    "e": Bench.part_e,
    "f": Bench.part_f,
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="scale every count down ~20x")
    parser.add_argument("--only", default="abcdef", help="parts to run, such as a,c,e")
    parser.add_argument("--out", type=Path, default=ROOT / ".bench" / "core.json")
    parser.add_argument("--clients", type=int, default=1, help="client processes for part a")
    parser.add_argument("--channels", type=int, default=1, help="channels per client in part a")
    parser.add_argument("--concurrency", type=int, default=64, help="calls in flight per channel")
    parser.add_argument("--watch-clients", type=int, default=2, help="client processes, parts d, e")
    parser.add_argument("--watch-channels", type=int, default=10, help="channels in all, part d")
    parser.add_argument("--part-timeout", type=float, default=300.0, help="seconds per step")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra argument for conveyor-server (repeat), such as --server-arg=--workers=8",
    )
    options = parser.parse_args(argv)
    options.only = [p for p in options.only.replace(",", "") if p.strip()]
    unknown = set(options.only) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    return options


def main(argv: list[str]) -> int:
    options = parse_args(argv)
    scale = QUICK if options.quick else FULL
    log_dir = ROOT / ".bench" / "core-logs"  # kept out of the results folder
    log_dir.mkdir(parents=True, exist_ok=True)
    report = Report()
    bench = Bench(options, scale, Conveyor(log_dir, options.server_arg), report, log_dir)
    started = time.perf_counter()
    failures: dict[str, str] = {}
    try:
        for name in options.only:
            print(f"== part {name}: {PARTS[name].__doc__}", flush=True)
            try:
                PARTS[name](bench)
            except Exception as exc:  # one broken part must not hide the others
                failures[name] = f"{type(exc).__name__}: {exc}"
                print(f"  part {name} failed: {failures[name]}", flush=True)
                report.add(name, "(part failed)", None, "", note=str(exc).splitlines()[0][:120])
    finally:
        stop_all()
    facts = machine_facts(report.details.get("echo_server_settings"))
    facts["seconds"] = round(time.perf_counter() - started, 1)
    facts["quick"] = options.quick
    if bench.conveyor.missing:
        facts["server_flags_missing"] = sorted(bench.conveyor.missing)
    print()
    print(
        f"Machine: {facts['cores']} cores ({facts['cpu']}), Python {facts['python']}, "
        f"grpcio {facts['grpcio']}, server uvloop: {facts['server_uvloop']}, "
        f"client loop: {facts['client_loop']}"
    )
    print(
        f"Command: {facts['command']}   ({facts['seconds']} s{', QUICK: not for judging' if options.quick else ''})"
    )
    if bench.conveyor.missing:
        print(f"conveyor-server lacks flags for: {', '.join(sorted(bench.conveyor.missing))}")
    print()
    table = report.markdown()
    print(table)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(
        json.dumps(
            {
                "machine": facts,
                "results": [row.__dict__ for row in report.rows],
                "details": report.details,
                "failures": failures,
                "markdown": table,
            },
            indent=2,
            default=str,
        )
        + "\n"
    )
    print(f"\nwritten to {options.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
