"""One tracer provider for the process, its spans kept in memory.

OpenTelemetry takes a global provider once per process, so it is set for
the session; each test starts with an empty exporter.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator

_exporter = InMemorySpanExporter()


class _PrivateIds(IdGenerator):
    """Span and trace ids from a generator of their own. The SDK's default
    draws from the global `random`, and the provider outlives these tests:
    spans that servers of later tests make would draw from it on their
    threads while a hypothesis test elsewhere in the run draws its
    examples, which hypothesis refuses."""

    def __init__(self) -> None:
        self._random = random.Random()

    def generate_span_id(self) -> int:
        return self._random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._random.getrandbits(128) or 1


@pytest.fixture(scope="session")
def tracer_provider() -> TracerProvider:
    provider = TracerProvider(id_generator=_PrivateIds())
    provider.add_span_processor(SimpleSpanProcessor(_exporter))
    trace.set_tracer_provider(provider)
    return provider


@pytest.fixture
def spans(tracer_provider: TracerProvider) -> Iterator[InMemorySpanExporter]:
    """The spans finished during the test."""
    _exporter.clear()
    yield _exporter
    _exporter.clear()


@pytest.fixture
def tracer(tracer_provider: TracerProvider) -> trace.Tracer:
    return tracer_provider.get_tracer("tests")
