"""The pytest example of docs/testing.md runs as its readers run it: the
handler module, conftest.py and the test file, in a pytest run of their own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.plugin import plugin_arguments

PAGE = Path(__file__).resolve().parents[2] / "docs" / "testing.md"
# The marker before each file of the example names the file.
EXAMPLE_FILE = re.compile(
    r"<!-- snippet: not run \((\S+\.py) of the pytest example; [^)]*\) -->\n```python\n(.*?)```",
    re.DOTALL,
)


def example_files() -> dict[str, str]:
    return dict(EXAMPLE_FILE.findall(PAGE.read_text(encoding="utf-8")))


def test_the_page_shows_the_whole_example() -> None:
    assert sorted(example_files()) == ["conftest.py", "invoices.py", "test_invoices.py"]


def test_the_documented_example_passes(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    for name, code in example_files().items():
        pytester.path.joinpath(name).write_text(code, encoding="utf-8")
    pytester.syspathinsert()

    outcome = pytester.runpytest(*plugin_arguments(), "-p", "no:cacheprovider")

    outcome.assert_outcomes(passed=4)
