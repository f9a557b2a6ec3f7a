"""Regenerate the protocol's Python code and type stubs into client/llm_proxy_client/generated/.

Run through `make proto`; `make proto-check` regenerates into a scratch folder and fails
if the committed files differ, so a stale checkout cannot pass CI.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PROTO_FILE = "llm_proxy.proto"
TARGET = ROOT / "client" / "llm_proxy_client" / "generated"
# protoc writes absolute imports ("import llm_proxy_pb2"); the package needs relative ones.
_ABSOLUTE_IMPORT = re.compile(r"^import llm_proxy_pb2", re.MULTILINE)


def generate(into: Path, *, quiet: bool = False) -> None:
    into.mkdir(parents=True, exist_ok=True)
    # protoc finds the mypy plugins by name on PATH; they sit beside this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    include = str(Path(protoc.__file__).parent / "_proto")
    arguments = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={into}",
        f"--grpc_python_out={into}",
        f"--mypy_out={into}",
        f"--mypy_grpc_out={into}",
        str(PROTO_DIR / PROTO_FILE),
    ]
    with _captured_output(quiet) as captured:
        status = protoc.main(arguments)
    if status != 0:
        sys.stderr.write("".join(captured))
        raise SystemExit(f"protoc failed with status {status}")
    for path in into.glob("llm_proxy_pb2*"):
        text = path.read_text()
        path.write_text(_ABSOLUTE_IMPORT.sub("from . import llm_proxy_pb2", text))
    (into / "__init__.py").write_text(
        '"""Generated from proto/llm_proxy.proto by proto/generate.py."""\n'
    )


@contextlib.contextmanager
def _captured_output(capture: bool) -> Iterator[list[str]]:
    """With `capture`, what protoc and its plugins write (the mypy plugin announces every file
    it writes) is collected for the caller to show only on failure. The plugins are
    subprocesses writing to the inherited descriptors, so the descriptors are redirected."""
    captured: list[str] = []
    if not capture:
        yield captured
        return
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile("w+") as sink:
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield captured
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for descriptor in saved:
                os.close(descriptor)
            sink.seek(0)
            captured.append(sink.read())


def check() -> int:
    with tempfile.TemporaryDirectory() as scratch:
        fresh = Path(scratch)
        generate(fresh, quiet=True)
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
