"""Regenerate the committed protobuf and gRPC code in client/conveyor/v1.

Usage: python scripts/gen_protos.py [--check]

With --check, generates into a temporary folder and exits 1 if anything
differs from what is committed (CI uses this).
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT_PACKAGE = ROOT / "client" / "conveyor" / "v1"
INIT_TEXT = '"""Generated protobuf messages and gRPC stubs for conveyor.v1."""\n'


def generate(out_root: Path) -> Path:
    """Generate into out_root/conveyor/v1 and return that folder."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    grpc_tools_dir = Path(__import__("grpc_tools").__file__).parent
    plugin_dir = Path(sys.executable).parent
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{grpc_tools_dir / '_proto'}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--plugin=protoc-gen-mypy={plugin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugin_dir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *protos,
    ]
    subprocess.run(cmd, check=True)
    package = out_root / "conveyor" / "v1"
    (package / "__init__.py").write_text(INIT_TEXT)
    (out_root / "conveyor" / "__init__.py").unlink(missing_ok=True)
    return package


def differences(left: Path, right: Path) -> list[str]:
    names = {p.name for p in left.iterdir() if p.is_file()} | {
        p.name for p in right.iterdir() if p.is_file()
    }
    return sorted(
        name
        for name in names
        if not (left / name).exists()
        or not (right / name).exists()
        or not filecmp.cmp(left / name, right / name, shallow=False)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generated = generate(Path(tmp))
        if args.check:
            stale = differences(generated, OUT_PACKAGE)
            if stale:
                print("generated code is stale; run scripts/gen_protos.py:", *stale, sep="\n  ")
                return 1
            print("generated code is up to date")
            return 0
        OUT_PACKAGE.mkdir(parents=True, exist_ok=True)
        for old in OUT_PACKAGE.iterdir():
            if old.is_file():
                old.unlink()
        for new in generated.iterdir():
            if new.is_file():
                shutil.copy2(new, OUT_PACKAGE / new.name)
    print(f"generated {len(list(OUT_PACKAGE.iterdir()))} files in client/conveyor/v1")
    return 0


if __name__ == "__main__":
    sys.exit(main())
