"""Shared fixtures for the black-box SDK tests: real `switchyard` processes on free loopback ports.

Every process is started with `--listen 127.0.0.1:0`; its address is read from the first line it prints
(`listening on http://…` for a mock with `--print-addr`, `switchyard listening on http://…` for the gateway).
Nothing depends on a fixed port or on the order tests run in. Processes live for the whole session (or a
module) and are terminated at the end; their stderr goes to a log file that is shown when one fails to start.

The binary is `$SWITCHYARD_BIN`, by default `target/debug/switchyard` under the repository root (build it
with `cargo build -p switchyard`; `scripts/test.sh` does).
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import re
import signal
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("SWITCHYARD_BIN") or REPO_ROOT / "target" / "debug" / "switchyard").resolve()
# test_mock_fidelity.py reads SWITCHYARD_BIN itself (and skips without it): give it the same binary.
os.environ["SWITCHYARD_BIN"] = str(BIN)

START_TIMEOUT_S = 20.0

# Variables that would change what `switchyard serve` does behind the tests' back.
_LEAKY_ENV = re.compile(r"^(SWITCHYARD_(CONFIG|LISTEN)|OLLAMA_HOST|[A-Z0-9_]*_API_KEY|AZURE_OPENAI_\w+|OPENAI_\w+|ANTHROPIC_\w+)$")


def _load_prctl():
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Resolved before any fork: the child only calls it.
_PRCTL = _load_prctl()


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM if the test process dies without tearing down (kill -9, a crash)."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def child_env(overrides: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process: the caller's, minus provider keys and switchyard settings, so
    that only the configuration a test writes decides what the gateway serves."""
    env = {k: v for k, v in os.environ.items() if not _LEAKY_ENV.match(k)}
    env.setdefault("SWITCHYARD_LOG", "info")
    env["NO_COLOR"] = "1"
    env.update(overrides or {})
    return env


# ---------------------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------------------


class Proc:
    """A child process whose first stdout line holds an `http://HOST:PORT` address."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, pattern: str, env: dict[str, str] | None = None):
        self.name = name
        self.argv = argv
        self.out_path = log_dir / f"{name}.stdout"
        self.err_path = log_dir / f"{name}.stderr"
        # Files, not pipes: a chatty child can never block on a full pipe nobody drains.
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=child_env(env), preexec_fn=_die_with_parent
            )
        self.url = self._wait_for_address(pattern)

    def _wait_for_address(self, pattern: str) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            text = self.out_path.read_text(errors="replace")
            if "\n" in text:
                first = text.splitlines()[0]
                m = re.search(pattern, first)
                if not m:
                    self.stop()
                    raise RuntimeError(f"{self.name}: unexpected first stdout line {first!r}\n{self.stderr_tail()}")
                return m.group(1).rstrip("/")
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode} before printing its address\n"
                    f"command: {' '.join(self.argv)}\n{self.stderr_tail()}"
                )
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.name} printed no address within {START_TIMEOUT_S}s\n{self.stderr_tail()}")

    def stderr_tail(self, n: int = 40) -> str:
        try:
            lines = self.err_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "stderr (last lines):\n" + "\n".join(lines[-n:])

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Procs:
    """Starts processes and stops every one of them at teardown, in reverse order."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.started: list[Proc] = []
        self._n = 0

    def _name(self, base: str) -> str:
        self._n += 1
        return f"{self._n:02d}-{base}"

    def mock(self, flavor: str, *extra: str, name: str | None = None) -> "Mock":
        argv = [str(BIN), "mock", "--provider", flavor, "--listen", "127.0.0.1:0", "--print-addr", *extra]
        p = Proc(self._name(name or f"mock-{flavor}"), argv, self.log_dir, r"listening on (http://\S+)")
        self.started.append(p)
        return Mock(p)

    def gateway(
        self, config: dict[str, Any] | None, *extra: str, name: str = "gateway", env: dict[str, str] | None = None
    ) -> "Gateway":
        argv = [str(BIN), "serve", "--listen", "127.0.0.1:0"]
        cfg_path = None
        if config is not None:
            cfg_path = self.log_dir / f"{self._n + 1:02d}-{name}.yaml"
            # JSON is YAML, and json.dumps quotes every string the way YAML needs.
            cfg_path.write_text(json.dumps(config, indent=2))
            argv += ["--config", str(cfg_path)]
        argv += list(extra)
        p = Proc(self._name(name), argv, self.log_dir, r"switchyard listening on (http://\S+)", env)
        self.started.append(p)
        return Gateway(p, cfg_path)

    def stop(self, p: Proc) -> None:
        p.stop()
        if p in self.started:
            self.started.remove(p)

    def stop_all(self) -> None:
        for p in reversed(self.started):
            p.stop()
        self.started.clear()


@dataclass
class Mock:
    proc: Proc

    @property
    def url(self) -> str:
        return self.proc.url

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        status, data = http_json(method, self.url + path, body)
        assert status == 200, f"mock admin {method} {path}: {status} {data!r}"
        return data

    def stats(self) -> dict:
        return self.admin("GET", "/mock/stats")

    def requests(self) -> list:
        return self.admin("GET", "/mock/requests")

    def reset(self) -> None:
        self.admin("POST", "/mock/reset")

    def behave(self, **behavior: Any) -> None:
        """Replaces the mock's knobs (see switchyard_mock::Behavior); no arguments: healthy again."""
        self.admin("PUT", "/mock/behavior", behavior)


@dataclass
class Gateway:
    proc: Proc
    config_path: Path | None
    extra: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.proc.url

    def client(self, **kw: Any):
        import openai

        kw.setdefault("max_retries", 0)
        kw.setdefault("timeout", 20.0)
        return openai.OpenAI(base_url=self.url + "/v1", api_key="anything", **kw)


def http_json(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 20.0):
    """A small JSON client (urllib): returns (status, parsed body or raw text)."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


@pytest.fixture(scope="session")
def switchyard_bin() -> Path:
    if not BIN.is_file() or not os.access(BIN, os.X_OK):
        pytest.fail(
            f"switchyard binary not found at {BIN}: run `cargo build -p switchyard` or set SWITCHYARD_BIN",
            pytrace=False,
        )
    return BIN


@pytest.fixture(scope="session")
def procs(switchyard_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Procs]:
    p = Procs(tmp_path_factory.mktemp("procs"))
    try:
        yield p
    finally:
        p.stop_all()


# ---------------------------------------------------------------------------------------------------------
# Test data: a PNG made here, served over HTTP on loopback
# ---------------------------------------------------------------------------------------------------------


def make_png(width: int = 3, height: int = 2, rgb: tuple[int, int, int] = (200, 30, 60)) -> bytes:
    """A valid RGB PNG, built with zlib and struct only."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes(rgb) * width  # filter byte 0, then the pixels
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b"")


def image_note(data: bytes, media_type: str = "image/png") -> str:
    """What the mock appends to its echo for an inline image."""
    return f" [image {media_type} {len(data)} bytes sha256={hashlib.sha256(data).hexdigest()[:16]}]"


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


@dataclass
class ImageServer:
    url: str
    png: bytes
    hits: list[str]


@pytest.fixture(scope="session")
def png_bytes() -> bytes:
    return make_png()


@pytest.fixture(scope="session")
def image_server(png_bytes: bytes) -> Iterator[ImageServer]:
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            hits.append(self.path)
            if self.path.split("?")[0] == "/pixel.png":
                self.send_response(200)
                self.send_header("content-type", "image/png")
                self.send_header("content-length", str(len(png_bytes)))
                self.end_headers()
                self.wfile.write(png_bytes)
            else:
                self.send_error(404)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ImageServer(f"http://127.0.0.1:{server.server_address[1]}", png_bytes, hits)
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------------------------------------
# The main gateway: one mock per flavour behind it, plus failing mocks for fallback tests
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Stack:
    gateway: Gateway
    mocks: dict[str, Mock]

    @property
    def url(self) -> str:
        return self.gateway.url

    def client(self, **kw: Any):
        return self.gateway.client(**kw)


@pytest.fixture(scope="session")
def mocks(procs: Procs) -> dict[str, Mock]:
    """One mock per wire format, plus two that fail every request. Shared by every gateway of the session."""
    return {
        "openai": procs.mock("openai"),
        "anthropic": procs.mock("anthropic"),
        "azure": procs.mock("azure"),
        "local": procs.mock("ollama"),
        # Every request fails: 529 (overloaded) and 429 (rate limited, Retry-After: 7, longer than the
        # gateway's default wait for a key, so it is answered at once).
        "flaky": procs.mock("openai", "--fault-rate", "1.0", "--fault-codes", "529", name="mock-flaky-529"),
        "limited": procs.mock(
            "anthropic", "--fault-rate", "1.0", "--fault-codes", "429", "--retry-after", "7", name="mock-limited-429"
        ),
    }


# The resilience settings are the defaults, as most users run them: retries, health ordering, cooldowns.
# A test that needs another setting says so where it sets it. (No pins here: a suite that only passes
# with breakers or retries switched off hides what users meet.)
@pytest.fixture(scope="session")
def provider_pins() -> dict[str, Any]:
    return {}


def stack_config(mocks: dict[str, Mock], pins: dict[str, Any]) -> dict[str, Any]:
    providers: dict[str, dict[str, Any]] = {
        "openai": {"type": "openai", "base_url": mocks["openai"].url, "keys": [{"name": "main", "value": "sk-openai-test"}]},
        "anthropic": {
            "type": "anthropic",
            "base_url": mocks["anthropic"].url,
            "keys": [{"value": "sk-ant-test"}],
            "default_max_tokens": 512,
        },
        # A deployment map entry: `azure/my-mini` is sent to the deployment `gpt-4o-mini`; other names are
        # used as deployment names as they are.
        "azure": {
            "type": "azure",
            "base_url": mocks["azure"].url,
            "keys": [{"value": "azure-test-key"}],
            # Azure has no model list to read: its deployments name what it serves (for bare names and
            # /v1/models). No `models` allow-list, so the fault-injecting `model+kind=...` names still pass.
            "deployments": {"my-mini": "gpt-4o-mini", "gpt-4o-mini": "gpt-4o-mini", "text-embedding-3-small": "text-embedding-3-small"},
        },
        "local": {"type": "ollama", "base_url": mocks["local"].url},
        # The healthy OpenAI mock again, with short timeouts, for timeout tests (driven by model-name
        # suffixes such as `gpt-4o-mini+kind=hang`, which the mock strips).
        "slow": {
            "type": "openai",
            "base_url": mocks["openai"].url,
            "keys": [{"value": "sk-slow"}],
            "timeout": "1s",
            "first_byte_timeout": "800ms",
            "stream_idle_timeout": "250ms",
        },
        "flaky": {"type": "openai", "base_url": mocks["flaky"].url, "keys": [{"value": "sk-flaky"}]},
        "limited": {"type": "anthropic", "base_url": mocks["limited"].url, "keys": [{"value": "sk-limited"}]},
    }
    for p in providers.values():
        p.update(pins)
    return {
        "routing": {"deadline": "20s"},
        "images": {"allow_private_networks": ["127.0.0.1/32"], "fetch_timeout": "5s"},
        "providers": providers,
        "routes": [
            {"models": ["flaky/gpt-4o-mini"], "fallbacks": ["openai/gpt-4o-mini"]},
            {"models": ["limited/claude-haiku-4-5"], "fallbacks": ["flaky/gpt-4o", "local/llama3.2:latest"]},
        ],
    }


@pytest.fixture(scope="session")
def stack(procs: Procs, mocks: dict[str, Mock], provider_pins: dict[str, Any]) -> Stack:
    """The gateway most tests share. Only successes and caller faults go through it, so no state a failure
    leaves behind (key cooldowns, degraded providers) can reach another test: see `fresh`."""
    return Stack(procs.gateway(stack_config(mocks, provider_pins)), mocks)


@pytest.fixture()
def fresh(procs: Procs, mocks: dict[str, Mock], provider_pins: dict[str, Any]) -> Iterator[Stack]:
    """A gateway of its own for one test, with the same configuration and mocks as `stack`: for tests that
    make upstreams fail, time out or rate-limit, whose after-effects must not reach other tests."""
    gw = procs.gateway(stack_config(mocks, provider_pins), name="gateway-fresh")
    try:
        yield Stack(gw, mocks)
    finally:
        procs.stop(gw.proc)
