"""Set up the development environment and run the server, the tests or the linters.

Usage (standard library only; needs nothing but Python 3.11 or newer):

    python3.11 scripts/dev.py serve [conveyor-server args...]
    python3.11 scripts/dev.py test [pytest args...]
    python3.11 scripts/dev.py test --fast [pytest args...]   (the inner loop: no slow tests)
    python3.11 scripts/dev.py lint [--require-buf]

Every command first makes sure `.venv` exists in the repository root and holds
the project installed with `pip install -e '.[dev]'`. The install is redone only
when pyproject.toml changed since the last one (a stamp file in `.venv` keeps
its hash). Exit codes of the underlying tools are passed through; a test run
that collects no test (pytest's exit code 5) fails like any other.

`test` runs every test, as CI does. `test --fast` leaves out the tests marked
`slow` (it passes `-m "not slow"`) and runs the rest on two pytest-xdist
workers (`-n 2`): the core behaviour (SDK, CLI, service, every store, the
change feed, auth and tenants, HTTP) in about 30 seconds. A test is marked
slow (`pytestmark = pytest.mark.slow` for a module) when it kills processes,
fuzzes or storms the server, drives other programs (grpcurl, a browser,
server or snippet subprocesses) or waits on purpose for seconds: the fuzzing
and watch-storm modules of tests/hardening, tests/faults, the grpcurl and
browser suites, the docs snippets, the server-process operations, the
random-input robustness tests and the metrics endpoint. A new test module is
in the fast lane until it is marked.

`test` also installs Debian's `chromium` when it is missing and the user is
root (as in CI), for the dashboard's browser tests; others are told how.

`lint` runs `buf lint` and `buf breaking` in proto/: the contract must stay
wire- and source-compatible (buf.yaml's FILE rules) with the latest release tag,
or with HEAD's parent while there is no tag. A clone without that commit (a
shallow one) says so and skips the check; `--require-buf` fails when buf is
missing, and a breaking change fails lint either way.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".conveyor-install-stamp"
BUF_PREFIX = VENV / "buf"
BUF_LOCAL = BUF_PREFIX / "node_modules" / ".bin" / "buf"
PYTEST_NO_TESTS = 5
# The browser the dashboard's tests drive (tests/dashboard/conftest.py).
CHROMIUM = Path("/usr/bin/chromium")


def say(message: str) -> None:
    print(f"dev.py: {message}", file=sys.stderr, flush=True)


def run(cmd: Sequence[str | Path], cwd: Path = ROOT) -> int:
    printable = " ".join(str(part) for part in cmd)
    say(f"$ {printable}" + ("" if cwd == ROOT else f"   (in {cwd.relative_to(ROOT)})"))
    return subprocess.run([str(part) for part in cmd], cwd=cwd, check=False).returncode


def venv_python() -> Path:
    return BIN / "python"


def venv_works() -> bool:
    python = venv_python()
    if not python.exists():
        return False
    probe = subprocess.run(
        [str(python), "-c", "import sys; sys.exit(sys.version_info < (3, 11))"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def pyproject_hash() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def ensure_environment() -> None:
    """Create .venv when missing and (re)install the project when pyproject.toml changed."""
    # dev.py runs under whatever python3 the machine has, not the project's own.
    if sys.version_info < (3, 11):  # noqa: UP036
        sys.exit("dev.py: Python 3.11 or newer is needed")
    if not venv_works():
        if VENV.exists():
            say(f"{VENV} is unusable (no working Python 3.11+ inside); recreating it")
            shutil.rmtree(VENV)
        say(f"creating {VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    wanted = pyproject_hash()
    installed = STAMP.read_text().strip() if STAMP.exists() else ""
    if installed == wanted:
        return
    say("pyproject.toml changed since the last install; installing the project")
    code = run([venv_python(), "-m", "pip", "install", "--quiet", "-e", ".[dev]"])
    if code != 0:
        sys.exit(code)
    STAMP.write_text(wanted + "\n")


def serve(args: list[str]) -> int:
    server = BIN / "conveyor-server"
    os.execv(server, [str(server), *args])


def ensure_chromium() -> None:
    """Install Debian's chromium for the dashboard's browser tests when it is
    missing: Playwright cannot download its own browser builds here. As root
    (CI) it runs apt-get; otherwise it says how, and those tests skip (under
    CI=true they fail)."""
    if CHROMIUM.exists():
        return
    apt = shutil.which("apt-get")
    if apt is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        say(
            f"{CHROMIUM} is missing, so the dashboard's browser tests will skip; "
            "install it with `sudo apt-get install -y chromium`"
        )
        return
    say(f"{CHROMIUM} is missing: installing Debian's chromium for the browser tests")
    run([apt, "update", "-qq"])
    if run([apt, "install", "-y", "-qq", "chromium"]) != 0 or not CHROMIUM.exists():
        say("installing chromium failed: the dashboard's browser tests will skip (fail in CI)")


def test(args: list[str]) -> int:
    ensure_chromium()
    if "--fast" in args:
        # The fast lane, as the module docstring says.
        args = ["-m", "not slow", "-n", "2", *(arg for arg in args if arg != "--fast")]
    code = run([venv_python(), "-m", "pytest", *args])
    if code == PYTEST_NO_TESTS:
        say("pytest collected no tests: that counts as a failure")
    return code


def find_buf(install: bool) -> Path | None:
    on_path = shutil.which("buf")
    if on_path:
        return Path(on_path)
    if BUF_LOCAL.exists():
        return BUF_LOCAL
    if not install:
        return None
    npm = shutil.which("npm")
    if npm is None:
        say("npm is not available, so buf cannot be installed")
        return None
    code = run(
        [
            npm,
            "install",
            "--silent",
            "--no-audit",
            "--no-fund",
            "--prefix",
            BUF_PREFIX,
            "@bufbuild/buf",
        ]
    )
    if code != 0 or not BUF_LOCAL.exists():
        say("installing buf with npm failed")
        return None
    return BUF_LOCAL


def git(*args: str) -> str | None:
    """Output of a git command in the repository, or None when it fails."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def breaking_baseline() -> tuple[str, str] | None:
    """The git ref the contract must stay compatible with, and its name: the
    latest release tag when there is one, else HEAD's parent, so that each
    commit on main is checked against the one before it (uncommitted changes
    included). None, said aloud, when there is nothing to compare with."""
    if git("rev-parse", "--is-inside-work-tree") != "true":
        say("not a git checkout: skipping buf breaking")
        return None
    tag = git("describe", "--tags", "--abbrev=0", "HEAD")
    name = f"tag {tag}" if tag else "HEAD~1"
    commit = git("rev-parse", "--verify", "--quiet", f"{tag or 'HEAD~1'}^{{commit}}")
    if commit is None:
        say(
            "HEAD has no parent commit in this clone (its first commit, or a shallow clone): "
            "skipping buf breaking"
        )
        return None
    return (tag or commit), f"{name}, {commit[:12]}"


def lint(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dev.py lint")
    parser.add_argument(
        "--require-buf",
        action="store_true",
        help="fail when buf cannot be found or installed (CI passes this)",
    )
    options = parser.parse_args(args)
    python = venv_python()
    steps: list[tuple[str, list[str | Path], Path]] = [
        ("ruff check", [BIN / "ruff", "check", "."], ROOT),
        ("ruff format", [BIN / "ruff", "format", "--check", "."], ROOT),
        ("mypy", [BIN / "mypy"], ROOT),
    ]
    if (ROOT / "examples" / "sdk_usage.py").exists():
        steps.append(("mypy examples", [BIN / "mypy", "--strict", "examples/sdk_usage.py"], ROOT))
    steps.append(("generated code", [python, "scripts/gen_protos.py", "--check"], ROOT))
    steps.append(("config docs", [python, "scripts/gen_config_docs.py", "--check"], ROOT))
    failed: list[str] = []
    for name, cmd, cwd in steps:
        if run(cmd, cwd) != 0:
            failed.append(name)
    buf = find_buf(install=True)
    if buf is None:
        if options.require_buf:
            failed.append("buf lint and buf breaking (buf unavailable)")
        else:
            say("buf is not available: skipping buf lint and buf breaking")
    else:
        if run([buf, "lint"], ROOT / "proto") != 0:
            failed.append("buf lint")
        baseline = breaking_baseline()
        if baseline is not None:
            ref, name = baseline
            say(f"buf breaking: the contract must stay compatible with {name}")
            against = f"../.git#ref={ref},subdir=proto"
            if run([buf, "breaking", "--against", against], ROOT / "proto") != 0:
                failed.append(f"buf breaking (against {name})")
    if failed:
        say("lint failed: " + ", ".join(failed))
        return 1
    say("lint passed")
    return 0


COMMANDS = {"serve": serve, "test": test, "lint": lint}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 2
    ensure_environment()
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
