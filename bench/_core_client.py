"""Client side of bench/core.py: one workload per process, result as JSON on stdout.

Run by bench.py, not by hand:

    python bench/_core_client.py WORKLOAD '{"target": "127.0.0.1:PORT", ...}'

Every workload runs on one asyncio loop (uvloop when installed, for every target
alike, so the harness is the same for the echo server and for Conveyor). The
last line printed is the result; `hold-watches` and `fanout` also print
`READY ...` once all their streams are open.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import duration_pb2, struct_pb2

from conveyor.v1 import task_pb2, task_service_pb2, task_service_pb2_grpc

SERVICE = "/conveyor.v1.TaskService/"
PENDING = task_pb2.TASK_STATE_PENDING
RUNNING = task_pb2.TASK_STATE_RUNNING
SUCCEEDED = task_pb2.TASK_STATE_SUCCEEDED
TERMINAL = (
    task_pb2.TASK_STATE_SUCCEEDED,
    task_pb2.TASK_STATE_FAILED,
    task_pb2.TASK_STATE_CANCELLED,
)


def channel(target: str, index: int = 0) -> grpc.aio.Channel:
    # A local subchannel pool and a distinct argument give every channel its own
    # TCP connection; otherwise channels to one target share a single one.
    return grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.use_local_subchannel_pool", 1),
            ("bench.channel_index", index),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ],
    )


def noop_request(delay_s: float = 0.0) -> task_service_pb2.SubmitTaskRequest:
    payload = struct_pb2.Struct()
    payload.update({"seconds": 0})
    request = task_service_pb2.SubmitTaskRequest(type="sleep", payload=payload)
    if delay_s:
        request.delay.CopyFrom(duration_pb2.Duration(seconds=int(delay_s)))
    return request


def timestamp_s(stamp: Any) -> float:
    return float(stamp.seconds) + float(stamp.nanos) / 1e9


async def unary_rate(args: dict[str, Any]) -> dict[str, Any]:
    """N coroutines per channel call one method with fixed bytes, as fast as they can."""
    request = bytes.fromhex(args["request_hex"])
    channels = [channel(args["target"], i) for i in range(args["channels"])]
    calls: list[Any] = [c.unary_unary(args["method"]) for c in channels]
    start_at, warmup, duration = args["start_at"], args["warmup"], args["duration"]
    measure_from = start_at + warmup
    measure_to = measure_from + duration
    counts = {"ok": 0, "errors": 0}
    error_codes: dict[str, int] = {}

    async def caller(call: Any) -> None:
        while True:
            now = time.time()
            if now >= measure_to:
                return
            try:
                await call(request, timeout=30)
                ok = True
            except grpc.aio.AioRpcError as exc:
                ok = False
                code = exc.code().name
            done = time.time()
            if measure_from <= done < measure_to:
                if ok:
                    counts["ok"] += 1
                else:
                    counts["errors"] += 1
                    error_codes[code] = error_codes.get(code, 0) + 1

    await asyncio.sleep(max(0.0, start_at - time.time()))
    await asyncio.gather(
        *(caller(calls[i % len(calls)]) for i in range(args["concurrency"] * len(calls)))
    )
    for c in channels:
        await c.close()
    return {
        "calls": counts["ok"],
        "errors": counts["errors"],
        "error_codes": error_codes,
        "seconds": duration,
        "rate": counts["ok"] / duration,
    }


async def wait_until_idle(stub: Any, last_id: str, deadline: float) -> float | None:
    """Polls the last task, then ListTasks, until nothing is PENDING or RUNNING."""
    get = task_service_pb2.GetTaskRequest(id=last_id)
    while time.perf_counter() < deadline:
        task = (await stub.GetTask(get)).task
        if task.state in TERMINAL:
            break
        await asyncio.sleep(0.002)
    busy = task_service_pb2.ListTasksRequest(page_size=1, states=[PENDING, RUNNING])
    while time.perf_counter() < deadline:
        if not (await stub.ListTasks(busy)).tasks:
            return time.perf_counter()
        await asyncio.sleep(0.005)
    return None


async def count_states(stub: Any, states: list[task_pb2.TaskState.ValueType]) -> int:
    """How many tasks are in these states (stops counting at 1,000: enough to report)."""
    reply = await stub.ListTasks(task_service_pb2.ListTasksRequest(page_size=1000, states=states))
    return len(reply.tasks)


async def noop_throughput(args: dict[str, Any]) -> dict[str, Any]:
    """Submits sleep-0 tasks (one per call, or batched) and times until all have finished."""
    total, batch, concurrency = args["tasks"], args["batch"], args["concurrency"]
    async with channel(args["target"]) as ch:
        stub = task_service_pb2_grpc.TaskServiceStub(ch)
        request = noop_request()
        batch_request = task_service_pb2.BatchSubmitTasksRequest(requests=[request] * batch)
        remaining = {"calls": (total + batch - 1) // batch}
        last_ids: list[str] = []

        async def submitter() -> None:
            while remaining["calls"] > 0:
                remaining["calls"] -= 1
                if batch == 1:
                    last_ids.append((await stub.SubmitTask(request, timeout=60)).task.id)
                else:
                    reply = await stub.BatchSubmitTasks(batch_request, timeout=60)
                    last_ids.append(reply.tasks[-1].id)

        started = time.perf_counter()
        await asyncio.gather(*(submitter() for _ in range(concurrency)))
        submitted = time.perf_counter()
        finished = await wait_until_idle(stub, last_ids[-1], started + args["timeout"])
        failed = await count_states(stub, [task_pb2.TASK_STATE_FAILED])
    submitted_tasks = len(last_ids) * batch
    if finished is None:
        return {"tasks": submitted_tasks, "timed_out": True, "seconds": args["timeout"]}
    seconds = finished - started
    return {
        "tasks": submitted_tasks,
        "seconds": seconds,
        "submit_seconds": submitted - started,
        "rate": submitted_tasks / seconds,
        "failed": failed,
        "timed_out": False,
    }


async def latency(args: dict[str, Any]) -> dict[str, Any]:
    """One task in flight: submit, then WatchTask until it has succeeded."""
    samples: list[float] = []
    bad = 0
    async with channel(args["target"]) as ch:
        stub = task_service_pb2_grpc.TaskServiceStub(ch)
        request = noop_request()
        for index in range(args["warmup"] + args["tasks"]):
            started = time.perf_counter()
            task = (await stub.SubmitTask(request, timeout=10)).task
            state = task.state
            async for message in stub.WatchTask(
                task_service_pb2.WatchTaskRequest(id=task.id), timeout=10
            ):
                state = message.task.state
                if state in TERMINAL:
                    break
            elapsed = time.perf_counter() - started
            if state != SUCCEEDED:
                bad += 1
            elif index >= args["warmup"]:
                samples.append(elapsed * 1000)
    return {"samples_ms": samples, "not_succeeded": bad}


async def open_watchers(
    args: dict[str, Any], on_message: Callable[[int, Any], None] | None = None
) -> tuple[list[grpc.aio.Channel], list[Any], list[Coroutine[Any, Any, None]]]:
    """Opens `streams` WatchTask streams over `channels` channels, round-robin over the tasks.

    Returns once every stream has delivered its first snapshot; the returned
    readers keep consuming (and calling on_message) until the stream ends.
    """
    channels = [channel(args["target"], i) for i in range(args["channels"])]
    stubs = [task_service_pb2_grpc.TaskServiceStub(c) for c in channels]
    task_ids: list[str] = args["task_ids"]
    calls: list[Any] = []
    # Open in waves: a burst of more than ~1,000 new calls at once overflows the
    # server's queue of calls not yet accepted (grpc.server.max_pending_requests),
    # and gRPC cancels the excess.
    wave = args.get("wave", 250)
    for first in range(0, args["streams"], wave):
        opened = [
            stubs[i % len(stubs)].WatchTask(
                task_service_pb2.WatchTaskRequest(id=task_ids[i % len(task_ids)])
            )
            for i in range(first, min(first + wave, args["streams"]))
        ]
        await asyncio.gather(*(call.read() for call in opened))
        calls += opened

    async def reader(index: int, call: Any) -> None:
        try:
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    return
                if on_message is not None:
                    on_message(index, message)
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            return

    readers = [reader(i, call) for i, call in enumerate(calls)]
    return channels, calls, readers


async def hold_watches(args: dict[str, Any]) -> dict[str, Any]:
    """Holds streams open until a line arrives on stdin (bench.py reads server RSS meanwhile)."""
    channels, calls, readers = await open_watchers(args)
    tasks = [asyncio.ensure_future(r) for r in readers]
    print(f"READY {len(calls)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for call in calls:
        call.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for c in channels:
        await c.close()
    return {"streams": len(calls)}


async def fanout(args: dict[str, Any]) -> dict[str, Any]:
    """Watches one task from many streams; records arrival minus update_time of every delivery."""
    delays_ms: list[float] = []
    ended = {"succeeded": 0}

    def on_message(_index: int, message: Any) -> None:
        arrived = time.time()
        delays_ms.append((arrived - timestamp_s(message.task.update_time)) * 1000)
        if message.task.state == SUCCEEDED:
            ended["succeeded"] += 1

    channels, calls, readers = await open_watchers(args, on_message)
    print(f"READY {len(calls)}", flush=True)
    await asyncio.wait_for(asyncio.gather(*readers), timeout=args["timeout"])
    for c in channels:
        await c.close()
    return {
        "streams": len(calls),
        "delays_ms": [round(d, 3) for d in delays_ms],
        "saw_success": ended["succeeded"],
    }


WORKLOADS: dict[str, Callable[[dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]] = {
    "unary-rate": unary_rate,
    "noop-throughput": noop_throughput,
    "latency": latency,
    "hold-watches": hold_watches,
    "fanout": fanout,
}


def main() -> None:
    workload, raw = sys.argv[1], sys.argv[2]
    args = json.loads(raw)
    coroutine = WORKLOADS[workload](args)
    try:
        import uvloop
    except ImportError:
        result: dict[str, Any] = asyncio.run(coroutine)
    else:
        result = uvloop.run(coroutine)
    Path(sys.argv[3]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
