"""Fixtures for driving the real `exai` binary with the official MCP Python SDK.

Processes:
  * `fake_provider` (session scope): `exai-fake-provider --listen 127.0.0.1:0`,
    an OpenAI-compatible fake LLM whose behaviour is chosen by model name.
  * `daemon` (module scope): `exai daemon --listen 127.0.0.1:0` with its own
    EXAI_HOME, pointed at the fake provider, heartbeat progress every 0.5 s.
  * `deadline_daemon` (module scope): the same with EXAI_CALL_TIMEOUT_S=2.

Binaries: $EXAI_BIN / $EXAI_FAKE_BIN, else <repo>/target/debug/{exai,exai-fake-provider}
(build them with `cargo build --workspace --bins`).

Startup waits poll for a condition under a bounded deadline; nothing sleeps a
fixed time. Every process started here is terminated (then killed) in teardown.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mcp import StdioServerParameters

REPO = Path(__file__).resolve().parents[2]
EXAI_BIN = Path(os.environ.get("EXAI_BIN") or REPO / "target" / "debug" / "exai")
EXAI_FAKE_BIN = Path(os.environ.get("EXAI_FAKE_BIN") or REPO / "target" / "debug" / "exai-fake-provider")

STARTUP_DEADLINE_S = 20.0
POLL_INTERVAL_S = 0.02


# --------------------------------------------------------------------------- helpers


class GiveUp(Exception):
    """Raised by a `wait_until` probe when the condition can no longer become true."""


def wait_until(what: str, probe: Callable[[], Any], deadline_s: float, interval_s: float = POLL_INTERVAL_S) -> Any:
    """Poll `probe` until it returns a truthy value; fail after `deadline_s` seconds."""
    end = time.monotonic() + deadline_s
    last_exc: BaseException | None = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except GiveUp:
            raise
        except Exception as exc:  # noqa: BLE001 - the probe may fail until the condition holds
            last_exc = exc
        if time.monotonic() >= end:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            raise AssertionError(f"timed out after {deadline_s} s waiting for {what}{detail}")
        time.sleep(interval_s)


# A PostgreSQL server (a URL to its `postgres` database) to keep every exai's store in, as the
# Rust harness does: scripts/test runs these tests once on SQLite and once on it.
TEST_DATABASE_SERVER = os.environ.get("EXAI_TEST_DATABASE_URL")
_databases_made: set[str] = set()


def store_env(home: str | Path) -> dict[str, str]:
    """With EXAI_TEST_DATABASE_URL set, the store of the exai in `home`: a database of its own on
    that server, named from the home's path and made on first use. Otherwise nothing (SQLite)."""
    if not TEST_DATABASE_SERVER:
        return {}
    name = "exai_py_" + hashlib.sha256(str(home).encode()).hexdigest()[:24]
    if name not in _databases_made:
        made = subprocess.run(
            ["psql", TEST_DATABASE_SERVER, "-qc", f"CREATE DATABASE {name}"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert made.returncode == 0 or b"already exists" in made.stderr, made.stderr.decode()
        _databases_made.add(name)
    server, _ = TEST_DATABASE_SERVER.rsplit("/", 1)
    return {"EXAI_DATABASE_URL": f"{server}/{name}"}


def clean_env(**extra: str) -> dict[str, str]:
    """The test runner's environment without anything that configures exai or a provider; an
    exai given its EXAI_HOME gets that home's store (see `store_env`)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EXAI_", "CUSTOM_")) and not k.endswith("_API_KEY") and k != "RUST_LOG"
    }
    if "EXAI_HOME" in extra:
        env.update(store_env(extra["EXAI_HOME"]))
    env.update(extra)
    return env


def http_get_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8", "replace")


def stop_process(proc: subprocess.Popen[Any], grace_s: float = 5.0) -> None:
    """Terminate one process we started (by its handle), killing it if it lingers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace_s)


def _require_binary(path: Path, env_name: str) -> None:
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{path} not found or not executable: run `cargo build --workspace --bins` or set {env_name}", pytrace=False)


# --------------------------------------------------------------------------- fake provider


@dataclass
class FakeProvider:
    proc: subprocess.Popen[bytes]
    base_url: str  # http://127.0.0.1:PORT

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/v1"

    def stats(self) -> dict[str, Any]:
        status, body = http_get_json(f"{self.base_url}/stats")
        assert status == 200, body
        return body


@pytest.fixture(scope="session")
def fake_provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeProvider]:
    _require_binary(EXAI_FAKE_BIN, "EXAI_FAKE_BIN")
    logdir = tmp_path_factory.mktemp("fake-provider")
    stderr = open(logdir / "stderr.log", "wb")  # noqa: SIM115 - closed in teardown
    proc = subprocess.Popen(
        [str(EXAI_FAKE_BIN), "--listen", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=clean_env(),
    )
    try:
        assert proc.stdout is not None
        # Wait for the one "LISTENING http://..." line, bounded by a deadline.
        ready, _, _ = select.select([proc.stdout], [], [], STARTUP_DEADLINE_S)
        line = proc.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("LISTENING http://"):
            stop_process(proc)
            pytest.fail(
                f"fake provider did not announce itself (got {line!r}); stderr:\n"
                f"{(logdir / 'stderr.log').read_text(errors='replace')}",
                pytrace=False,
            )
        yield FakeProvider(proc=proc, base_url=line.split(" ", 1)[1].rstrip("/"))
    finally:
        stop_process(proc)
        if proc.stdout:
            proc.stdout.close()
        stderr.close()


# --------------------------------------------------------------------------- daemon


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    home: Path
    listen: str  # 127.0.0.1:PORT
    token: str
    provider: FakeProvider

    @property
    def base_url(self) -> str:
        return f"http://{self.listen}"

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/mcp"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.listen}/ws"

    @property
    def token_path(self) -> Path:
        return self.home / "token"

    def healthz(self) -> dict[str, Any]:
        status, body = http_get_json(f"{self.base_url}/healthz")
        assert status == 200, f"/healthz answered {status}: {body}"
        return body

    def stdio_params(self) -> StdioServerParameters:
        """`exai stdio` relaying to this daemon over its WebSocket."""
        return StdioServerParameters(
            command=str(EXAI_BIN),
            args=["stdio"],
            env={"EXAI_HOME": str(self.home), "EXAI_URL": self.ws_url, "EXAI_NO_AUTOSTART": "1"},
        )

    # ---- call records (read through the CLI, as a user would)

    def exai(self, *args: str) -> str:
        out = subprocess.run(
            [str(EXAI_BIN), *args],
            env=clean_env(EXAI_HOME=str(self.home)),
            capture_output=True,
            timeout=20,
            check=False,
        )
        assert out.returncode == 0, f"exai {' '.join(args)} failed ({out.returncode}): {out.stderr.decode()}"
        return out.stdout.decode()

    def call_record(self, call_id: str) -> dict[str, Any]:
        return json.loads(self.exai("calls", "show", call_id, "--json"))

    def calls(self, limit: int = 100) -> list[dict[str, Any]]:
        return json.loads(self.exai("calls", "--json", "--limit", str(limit)))

    def find_call(self, prompt: str) -> dict[str, Any] | None:
        """The most recent call whose arguments carry this (unique) prompt."""
        for call in self.calls():
            if json.loads(call.get("arguments") or "{}").get("prompt") == prompt:
                return call
        return None

    def wait_call_state(self, prompt: str, states: set[str], deadline_s: float = 15.0) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            call = self.find_call(prompt)
            return call if call and call["state"] in states else None

        try:
            return wait_until(f"a call with prompt {prompt!r} in state {sorted(states)}", probe, deadline_s, 0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last record: {self.find_call(prompt)}") from None


def _start_daemon(
    tmp_path_factory: pytest.TempPathFactory, provider: FakeProvider, name: str, **extra_env: str
) -> tuple[Daemon, Any]:
    _require_binary(EXAI_BIN, "EXAI_BIN")
    home = tmp_path_factory.mktemp(name)
    stderr = open(home.parent / f"{home.name}-stderr.log", "wb")  # noqa: SIM115 - closed in teardown
    env = clean_env(
        EXAI_HOME=str(home),
        CUSTOM_API_URL=provider.api_url,
        CUSTOM_MODEL_NAME="fake-fast",
        **extra_env,
    )
    proc = subprocess.Popen(
        [str(EXAI_BIN), "daemon", "--listen", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        env=env,
    )

    def ready() -> tuple[str, str] | None:
        if proc.poll() is not None:
            raise GiveUp(f"daemon exited with {proc.returncode}")
        info = json.loads((home / "daemon.json").read_text())
        if info.get("pid") != proc.pid:
            return None
        token = (home / "token").read_text().strip()
        if not token:
            return None
        status, body = http_get_json(f"http://{info['listen']}/healthz", timeout=1.0)
        if status != 200 or body.get("status") != "ok":
            return None
        return info["listen"], token

    try:
        listen, token = wait_until("daemon.json, token and /healthz", ready, STARTUP_DEADLINE_S)
    except BaseException as exc:
        stop_process(proc)
        stderr.close()
        if not isinstance(exc, (AssertionError, GiveUp)):
            raise
        log = (home.parent / f"{home.name}-stderr.log").read_text(errors="replace")
        raise AssertionError(f"daemon did not come up ({exc}); stderr:\n{log}") from None
    return Daemon(proc=proc, home=home, listen=listen, token=token, provider=provider), stderr


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, fake_provider: FakeProvider) -> Iterator[Daemon]:
    d, stderr = _start_daemon(tmp_path_factory, fake_provider, "exai-home", EXAI_PROGRESS_INTERVAL_S="0.5")
    try:
        yield d
    finally:
        stop_process(d.proc)
        stderr.close()


@pytest.fixture(scope="module")
def deadline_daemon(tmp_path_factory: pytest.TempPathFactory, fake_provider: FakeProvider) -> Iterator[Daemon]:
    d, stderr = _start_daemon(
        tmp_path_factory, fake_provider, "exai-home-deadline", EXAI_CALL_TIMEOUT_S="2", EXAI_PROGRESS_INTERVAL_S="0.5"
    )
    try:
        yield d
    finally:
        stop_process(d.proc)
        stderr.close()


# --------------------------------------------------------------------------- async backend


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
