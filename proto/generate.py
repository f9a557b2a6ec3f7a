"""Regenerate the protocol's Python code and type stubs into client/llm_proxy_client/generated/.

Run through `make proto`; `make proto-check` regenerates into a scratch folder and fails
if the committed files differ, so a stale checkout cannot pass CI.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PROTO_FILE = "llm_proxy.proto"
TARGET = ROOT / "client" / "llm_proxy_client" / "generated"
# protoc writes absolute imports ("import llm_proxy_pb2"); the package needs relative ones.
_ABSOLUTE_IMPORT = re.compile(r"^import llm_proxy_pb2", re.MULTILINE)


def generate(into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    # protoc finds the mypy plugins by name on PATH; they sit beside this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    include = str(Path(protoc.__file__).parent / "_proto")
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{include}",
            f"--python_out={into}",
            f"--grpc_python_out={into}",
            f"--mypy_out={into}",
            f"--mypy_grpc_out={into}",
            str(PROTO_DIR / PROTO_FILE),
        ]
    )
    if status != 0:
        raise SystemExit(f"protoc failed with status {status}")
    for path in into.glob("llm_proxy_pb2*"):
        text = path.read_text()
        path.write_text(_ABSOLUTE_IMPORT.sub("from . import llm_proxy_pb2", text))
    (into / "__init__.py").write_text(
        '"""Generated from proto/llm_proxy.proto by proto/generate.py."""\n'
    )


def check() -> int:
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch)
        generate(fresh)
        stale = [
            path.name
            for path in sorted(fresh.iterdir())
            if not (TARGET / path.name).exists()
            or (TARGET / path.name).read_bytes() != path.read_bytes()
        ]
    if stale:
        print(f"generated code is stale ({', '.join(stale)}): run `make proto`", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if generated code is stale")
    args = parser.parse_args()
    if args.check:
        return check()
    if TARGET.exists():
        shutil.rmtree(TARGET)
    generate(TARGET)
    return 0


if __name__ == "__main__":
    sys.exit(main())
