"""Test Conveyor handlers against a real server, without a broker or mocks.

Example::

    from conveyor.testing import ConveyorTestServer

    with ConveyorTestServer(registry) as conveyor:
        handle = conveyor.client.submit("resize", {"width": 64})
        conveyor.run_until_idle()
        assert handle.get().result == {"width": 64}

The pytest plugin (fixtures `conveyor_server`, `conveyor_client`,
`conveyor_async_client`) is registered when conveyor is installed. Running
the server needs `conveyor[server]`.
"""

from conveyor.testing._clock import TestClock
from conveyor.testing._server import AsyncConveyorTestServer, ConveyorTestServer

__all__ = ["AsyncConveyorTestServer", "ConveyorTestServer", "TestClock"]
