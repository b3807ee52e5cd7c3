"""How a pytester run gets conveyor.testing's pytest plugin: by its
`pytest11` entry point once the project is installed with it, else by
naming the module (a checkout whose installed metadata predates it)."""

from __future__ import annotations

from importlib.metadata import entry_points

from conveyor.testing import _plugin


def plugin_arguments() -> tuple[str, ...]:
    installed = any(entry.value == _plugin.__name__ for entry in entry_points(group="pytest11"))
    return () if installed else ("-p", _plugin.__name__)
