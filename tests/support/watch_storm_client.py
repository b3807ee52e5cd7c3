"""A client process for the watcher storm: opens WatchTask streams and drops them.

It runs apart from the server's process, so that what the storm test
measures there (threads, descriptors, memory) is the server's alone, and so
that it can vanish the hard way: killed, its sockets closed by the kernel.

    python watch_storm_client.py ADDRESS TASK_ID CHANNELS STREAMS WAVE

Commands on stdin, one per line, each answered with one line on stdout:

    open [N]  open N streams (default STREAMS) spread over CHANNELS channels,
              WAVE at a time, and read the first message of each; answers
              "open <streams with a first message> <first error or ->"
    cancel    cancel every stream, keep the channels; answers "cancelled"
    close     close the channels at once, no grace; answers "closed"

End of input ends the process. The test may also kill it with streams open.
"""

from __future__ import annotations

import asyncio
import sys

from grpc import aio

WATCH = "/conveyor.v1.TaskService/WatchTask"


def watch_request(task_id: str) -> bytes:
    # conveyor.v1.WatchTaskRequest{id: task_id}, written by hand so that
    # this process needs grpcio alone.
    encoded = task_id.encode()
    assert len(encoded) < 128
    return b"\x0a" + bytes([len(encoded)]) + encoded


class Storm:
    def __init__(self, address: str, task_id: str, channels: int, streams: int, wave: int) -> None:
        self.address = address
        self.request = watch_request(task_id)
        self.channel_count = channels
        self.stream_count = streams
        self.wave = wave
        self.channels: list[aio.Channel] = []
        self.calls: list[aio.UnaryStreamCall] = []  # type: ignore[type-arg]

    async def open(self, count: int) -> str:
        if not self.channels:
            # A connection per channel, as if each were a client of its own
            # (channels otherwise share one connection to one address).
            options = [("grpc.use_local_subchannel_pool", 1)]
            self.channels = [
                aio.insecure_channel(self.address, options=options)
                for _ in range(self.channel_count)
            ]
        methods = [channel.unary_stream(WATCH) for channel in self.channels]
        opened = 0
        error = "-"
        # In waves: gRPC's server refuses calls beyond a backlog of ones
        # waiting to be handed to the application (see the storm test).
        for start in range(0, count, self.wave):
            calls = [
                methods[index % len(methods)](self.request)
                for index in range(start, min(start + self.wave, count))
            ]
            self.calls.extend(calls)
            firsts = await asyncio.gather(*(call.read() for call in calls), return_exceptions=True)
            for first in firsts:
                if isinstance(first, bytes):
                    opened += 1
                elif error == "-":
                    error = repr(first).replace("\n", " ")
        return f"open {opened} {error}"

    def cancel(self) -> None:
        for call in self.calls:
            call.cancel()
        self.calls = []

    async def close(self) -> None:
        await asyncio.gather(*(channel.close(grace=None) for channel in self.channels))
        self.channels = []
        self.calls = []


async def main(storm: Storm) -> None:
    loop = asyncio.get_running_loop()
    while command := (await loop.run_in_executor(None, sys.stdin.readline)).strip():
        name, _, argument = command.partition(" ")
        if name == "open":
            answer = await storm.open(int(argument or storm.stream_count))
        elif name == "cancel":
            storm.cancel()
            answer = "cancelled"
        elif name == "close":
            await storm.close()
            answer = "closed"
        else:
            answer = f"unknown command {command!r}"
        print(answer, flush=True)
    await storm.close()


if __name__ == "__main__":
    address, task_id, channels, streams, wave = sys.argv[1:6]
    asyncio.run(main(Storm(address, task_id, int(channels), int(streams), int(wave))))
