"""The client ships as its own small distribution: both wheels build from this repository, the
client's holds only `llm_proxy_client` and needs only grpcio and protobuf, it works in a fresh
environment with nothing of the server in it, and `llm install <path>` registers its plugin."""

from __future__ import annotations

import asyncio
import email
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.integration.conftest import Proxy
from tests.support.environments import fresh_venv, offline_pip_env, pip

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SERVER_SOURCES = (
    "pyproject.toml",
    "README.md",
    "domain",
    "application",
    "adapters",
    "infrastructure",
)
SERVER_PACKAGES = ("domain", "application", "adapters", "infrastructure")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")


def _copy(names: tuple[str, ...], source: Path, into: Path) -> Path:
    # Builds run on a copy: setuptools writes build/ and egg-info beside the sources.
    into.mkdir(parents=True)
    for name in names:
        if (source / name).is_dir():
            shutil.copytree(source / name, into / name, ignore=_IGNORE)
        else:
            shutil.copy2(source / name, into / name)
    return into


def _build(source: Path, into: Path) -> Path:
    before = set(into.glob("*.whl"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(into),
            str(source),
        ],
        env=offline_pip_env(),
        check=True,
        capture_output=True,
    )
    (wheel,) = set(into.glob("*.whl")) - before
    return wheel


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("wheels")
    client_src = work / "src-client"
    shutil.copytree(ROOT / "client", client_src, ignore=_IGNORE)
    server_src = _copy(SERVER_SOURCES, ROOT, work / "src-server")
    out = work / "dist"
    out.mkdir()
    return {
        "client": _build(client_src, out),
        "server": _build(server_src, out),
        "client_src": client_src,
    }


def _metadata(wheel: Path) -> tuple[list[str], email.message.Message, str]:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(archive.read(info))
        points = next((n for n in names if n.endswith(".dist-info/entry_points.txt")), None)
        entry_points = archive.read(points).decode() if points else ""
    return names, meta, entry_points


def test_the_client_wheel_holds_only_the_client_and_needs_only_grpc_and_protobuf(
    wheels: dict[str, Path],
) -> None:
    names, meta, entry_points = _metadata(wheels["client"])
    assert meta["Name"] == "llm-proxy-client"
    top = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    assert top == {"llm_proxy_client"}
    assert "llm_proxy_client/generated/llm_proxy_pb2.py" in names
    assert "llm_proxy_client/generated/llm_proxy_pb2.pyi" in names
    assert "llm_proxy_client/py.typed" in names
    requires = meta.get_all("Requires-Dist") or []
    parsed = [Requirement(r) for r in requires]
    assert sorted(r.name for r in parsed if r.marker is None) == ["grpcio", "protobuf"]
    assert [r.name for r in parsed if r.marker is not None] == ["llm"]
    assert meta.get_all("Provides-Extra") == ["llm"]
    assert "llm_proxy = llm_proxy_client.llm_plugin" in entry_points


def test_the_server_wheel_depends_on_the_client_instead_of_carrying_it(
    wheels: dict[str, Path],
) -> None:
    names, meta, entry_points = _metadata(wheels["server"])
    top = {name.split("/")[0] for name in names if ".dist-info/" not in name}
    assert top == set(SERVER_PACKAGES)
    assert not any("generated" in name or "llm_plugin" in name for name in names)
    assert "llm-proxy-client==0.1.0" in (meta.get_all("Requires-Dist") or [])
    assert "[llm]" not in entry_points  # the plugin is registered once, by the client


async def test_the_client_wheel_works_in_a_fresh_environment(
    wheels: dict[str, Path], proxy: Proxy, tmp_path: Path
) -> None:
    python = fresh_venv(tmp_path / "venv", lent=["grpcio", "protobuf"])
    pip(python, "install", "--no-deps", str(wheels["client"]))
    pip(python, "check")  # every requirement of what is installed is met
    program = f"""
import importlib.util, json
from llm_proxy_client import ProxyClient
absent = [m for m in {[*SERVER_PACKAGES, "llm"]!r} if importlib.util.find_spec(m)]
with ProxyClient("llm-proxy+insecure://{proxy.address}") as client:
    print(json.dumps({{"absent": absent, "text": client.execute("hello", model="echo").text}}))
"""
    result = await asyncio.to_thread(
        subprocess.run, [str(python), "-c", program], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert '"absent": []' in result.stdout
    assert "hello" in result.stdout


async def test_llm_install_of_the_client_directory_registers_the_plugin(
    wheels: dict[str, Path], proxy: Proxy, tmp_path: Path
) -> None:
    # llm's own environment: llm (and pip, which `llm install` runs) but none of the server, no
    # plugin, and setuptools to build the directory without reaching an index.
    python = fresh_venv(
        tmp_path / "llm-env", lent=["llm", "pip", "setuptools", "grpcio", "protobuf"]
    )
    env = offline_pip_env() | {
        "PIP_NO_BUILD_ISOLATION": "0",
        "LLM_USER_PATH": str(tmp_path / "user"),
    }

    def llm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(python), "-m", "llm", *args], cwd=tmp_path, env=env, capture_output=True, text=True
        )

    before = await asyncio.to_thread(llm, "plugins")
    assert before.returncode == 0, before.stderr
    assert "llm-proxy-client" not in before.stdout
    installed = await asyncio.to_thread(llm, "install", str(wheels["client_src"]))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    after = await asyncio.to_thread(llm, "plugins")
    assert '"llm-proxy-client"' in after.stdout
    env["LLM_PROXY_URL"] = f"llm-proxy+insecure://{proxy.address}"
    answered = await asyncio.to_thread(llm, "-m", "proxy/echo", "through the plugin", "--no-stream")
    assert answered.returncode == 0, answered.stderr
    assert "through the plugin" in answered.stdout
