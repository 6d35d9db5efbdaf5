"""The real `exai` binary driven by the official MCP Python SDK (`mcp` 2.x).

Two protocol eras are exercised:
  * "legacy": `ClientSession(...)` + `initialize()` — the handshake era (2025-11-25);
  * "modern": `mcp.Client(...)` in its default mode="auto", which probes
    `server/discover` and, against exai, settles on 2026-07-28.
Transports: stdio (`exai stdio` relaying to the daemon over /ws, and
`exai stdio --no-daemon`) and Streamable HTTP (`/mcp` on the daemon).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher
from mcp.types import INVALID_PARAMS, REQUEST_TIMEOUT, CallToolResult, TextContent
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS

from conftest import EXAI_BIN, Daemon, FakeProvider, clean_env, store_env, wait_until

pytestmark = pytest.mark.anyio

CALL_ID_KEY = "exai.dev/callId"
WORKFLOWS = {
    "thinkdeep", "debug", "analyze", "codereview", "precommit", "refactor",
    "testgen", "secaudit", "docgen", "tracer", "planner",
}
TOOLS = {"chat", "challenge", "clink", "consensus", "listmodels", "status", "version", "call_result", "call_cancel", "call_list", "threads"} | WORKFLOWS
TERMINAL_STATES = {"succeeded", "failed", "timed_out", "cancelled", "interrupted"}


# --------------------------------------------------------------------------- helpers


class NoCancelOnAbandonDispatcher(JSONRPCDispatcher):
    """A client dispatcher that gives up on a timed-out request *silently*.

    mcp 2.x sends a courtesy `notifications/cancelled` when a request's read
    timeout elapses; this models a client that just stops waiting (as v1 of the
    SDK and many other clients do), via the documented `cancel_on_abandon`
    call option.
    """

    async def send_raw_request(self, method: str, params: Any, opts: Any = None, **kwargs: Any) -> dict[str, Any]:
        opts = dict(opts or {})
        opts["cancel_on_abandon"] = False
        return await super().send_raw_request(method, params, opts, **kwargs)


def stderr_log(daemon_home: Path) -> Any:
    """Where the stdio server's stderr goes (kept next to the daemon's home)."""
    return open(daemon_home.parent / f"{daemon_home.name}-stdio-stderr.log", "a")  # noqa: SIM115


@asynccontextmanager
async def stdio_streams(params: StdioServerParameters, home: Path) -> AsyncIterator[tuple[Any, Any]]:
    with stderr_log(home) as errlog:
        async with stdio_client(params, errlog=errlog) as streams:
            yield streams


@asynccontextmanager
async def http_streams(daemon: Daemon, token: str | None = None) -> AsyncIterator[tuple[Any, Any]]:
    headers = {"Authorization": f"Bearer {daemon.token if token is None else token}"}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30.0, read=300.0)) as http:
        async with streamable_http_client(daemon.mcp_url, http_client=http) as streams:
            yield streams


@asynccontextmanager
async def legacy_session(
    daemon: Daemon,
    transport: str,
    *,
    read_timeout_seconds: float | None = None,
    silent_give_up: bool = False,
) -> AsyncIterator[ClientSession]:
    """An initialized handshake-era `ClientSession` to the daemon over `transport`."""
    streams_cm = stdio_streams(daemon.stdio_params(), daemon.home) if transport == "stdio" else http_streams(daemon)
    async with streams_cm as (read, write):
        if silent_give_up:
            session = ClientSession(
                dispatcher=NoCancelOnAbandonDispatcher(read, write), read_timeout_seconds=read_timeout_seconds
            )
        else:
            session = ClientSession(read, write, read_timeout_seconds=read_timeout_seconds)
        async with session:
            init = await session.initialize()
            assert init.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS
            yield session


@asynccontextmanager
async def modern_client(
    daemon: Daemon, transport: str, *, read_timeout_seconds: float | None = None
) -> AsyncIterator[Client]:
    """`mcp.Client` in its default mode="auto" (server/discover first)."""
    if transport == "stdio":
        with stderr_log(daemon.home) as errlog:
            async with Client(
                stdio_client(daemon.stdio_params(), errlog=errlog), read_timeout_seconds=read_timeout_seconds
            ) as client:
                yield client
    else:
        headers = {"Authorization": f"Bearer {daemon.token}"}
        async with httpx2.AsyncClient(headers=headers) as http:
            async with Client(
                streamable_http_client(daemon.mcp_url, http_client=http), read_timeout_seconds=read_timeout_seconds
            ) as client:
                yield client


def text_of(result: CallToolResult) -> str:
    """The first text block: the answer itself (exai puts notes, like the continuation id, after it)."""
    parts = [c.text for c in result.content if isinstance(c, TextContent)]
    assert parts, f"no text content in {result!r}"
    return parts[0]


def call_id_of(result: CallToolResult) -> str:
    assert result.meta is not None, f"result has no _meta: {result!r}"
    call_id = result.meta.get(CALL_ID_KEY)
    assert isinstance(call_id, str) and call_id, f"_meta has no {CALL_ID_KEY}: {result.meta!r}"
    return call_id


class ProgressRecorder:
    def __init__(self) -> None:
        self.events: list[tuple[float, float | None, str | None]] = []

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.events.append((progress, total, message))

    def assert_heartbeats(self, model: str, at_least: int = 3) -> None:
        events = self.events
        assert len(events) >= at_least, f"expected >= {at_least} progress notifications, got {events}"
        values = [p for p, _, _ in events]
        assert all(b > a for a, b in zip(values, values[1:])), f"progress not strictly increasing: {values}"
        messages = [m or "" for _, _, m in events]
        assert all("chat" in m for m in messages), messages
        assert any(model in m for m in messages), messages
        assert any("streaming" in m for m in messages), messages


def leaf_exceptions(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaf_exceptions(sub)]
    return [exc]


def unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:10]}"


def raw_post(url: str, headers: dict[str, str], body: bytes = b"{}") -> tuple[int, str]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310 - loopback only
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def wait_provider_aborted(provider: FakeProvider, before: int) -> None:
    wait_until(
        f"the fake provider to see an aborted request (aborted was {before})",
        lambda: provider.stats()["aborted"] > before,
        deadline_s=5.0,
        interval_s=0.05,
    )


# --------------------------------------------------------------------------- stdio


async def test_stdio_initialize_and_list_tools(daemon: Daemon) -> None:
    async with stdio_streams(daemon.stdio_params(), daemon.home) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            assert init.server_info.name == "exai"
            assert init.capabilities.tools is not None
            assert init.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS

            listed = await session.list_tools()
            by_name = {t.name: t for t in listed.tools}
            assert set(by_name) == TOOLS
            for tool in listed.tools:
                assert tool.input_schema.get("type") == "object", (tool.name, tool.input_schema)
                assert tool.description
            chat = by_name["chat"].input_schema
            # prompt may be left out when files holds a prompt.txt: nothing is required.
            assert chat.get("required", []) == []
            assert chat["properties"]["prompt"]["type"] == "string"
            assert "model" in chat["properties"]
            assert "model" not in chat.get("required", [])

            # The stdio shim really relays to *this* daemon over its WebSocket.
            version = await session.call_tool("version", {})
            assert not version.is_error
            assert version.structured_content is not None
            assert version.structured_content["mode"] == "daemon"
            assert version.structured_content["pid"] == daemon.proc.pid
            assert version.structured_content["transport"] == "ws"

            for name in ("listmodels", "status"):
                result = await session.call_tool(name, {})
                assert not result.is_error, (name, result)
                assert text_of(result)


async def test_stdio_chat_and_call_record(daemon: Daemon) -> None:
    async with legacy_session(daemon, "stdio") as session:
        result = await session.call_tool("chat", {"prompt": "hello from python", "model": "fake-fast"})
        assert not result.is_error, result
        assert text_of(result) == "echo: hello from python"
        call_id = call_id_of(result)

        # Without a model, the configured default (CUSTOM_MODEL_NAME=fake-fast) answers.
        default = await session.call_tool("chat", {"prompt": "default model"})
        assert not default.is_error, default
        assert text_of(default) == "echo: default model"
        assert call_id_of(default) != call_id

    record = daemon.call_record(call_id)
    call = record["call"]
    assert call["id"] == call_id
    assert call["state"] == "succeeded"
    assert call["tool"] == "chat"
    assert call["model"] == "fake-fast"
    assert call["is_error"] is False
    assert json.loads(call["arguments"]) == {"prompt": "hello from python", "model": "fake-fast"}
    assert "echo: hello from python" in call["result"]
    assert isinstance(record["log"], list) and record["log"]


async def test_stdio_debug_workflow_and_consensus(daemon: Daemon, tmp_path: Path) -> None:
    """A two-step debug workflow (state kept by exai between calls) and a consensus of two models."""
    source = tmp_path / "cache.py"
    source.write_text("def get(key):\n    return None\n")
    async with legacy_session(daemon, "stdio") as session:
        first = await session.call_tool("debug", {
            "step": "get() always returns None", "step_number": 1, "total_steps": 2,
            "next_step_required": True, "findings": "reproduced",
        })
        assert not first.is_error, first
        step = json.loads(text_of(first))
        assert step["status"] == "pause_for_investigation"
        assert step["required_actions"]
        last = await session.call_tool("debug", {
            "step": "found it", "step_number": 2, "total_steps": 2, "next_step_required": False,
            "findings": "returns None unconditionally", "relevant_files": [str(source)],
            "continuation_id": step["continuation_id"], "model": "fake-fast",
        })
        assert not last.is_error, last
        done = json.loads(text_of(last))
        assert done["status"] == "calling_expert_analysis"
        assert done["summary"]["steps_taken"] == 2
        assert "return None" in last.content[1].text  # the fake echoes the question, file included

        consensus = await session.call_tool("consensus", {
            "step": "Adopt a read-through cache?",
            "models": [{"model": "fake-delay-200", "stance": "for"}, {"model": "fake-delay-201", "stance": "against"}],
        })
        assert not consensus.is_error, consensus
        summary = json.loads(text_of(consensus))
        assert summary["status"] == "consensus_complete"
        assert [m["status"] for m in summary["models_consulted"]] == ["answered", "answered"]


async def test_stdio_progress(daemon: Daemon) -> None:
    progress = ProgressRecorder()
    async with legacy_session(daemon, "stdio") as session:
        result = await session.call_tool(
            "chat", {"prompt": "p", "model": "fake-stream-6x500"}, progress_callback=progress
        )
    assert not result.is_error, result
    assert text_of(result).endswith("echo: p")
    progress.assert_heartbeats("fake-stream-6x500")
    assert daemon.call_record(call_id_of(result))["call"]["state"] == "succeeded"


async def test_stdio_deadline(deadline_daemon: Daemon) -> None:
    stats_before = deadline_daemon.provider.stats()
    async with legacy_session(deadline_daemon, "stdio") as session:
        started = time.monotonic()
        result = await session.call_tool("chat", {"prompt": unique("hang"), "model": "fake-hang"})
        elapsed = time.monotonic() - started
    assert result.is_error, result
    text = text_of(result)
    assert "timed out" in text, text
    assert "2 s" in text, text
    assert 1.5 <= elapsed < 10, f"deadline of 2 s answered after {elapsed:.2f} s"
    call = deadline_daemon.call_record(call_id_of(result))["call"]
    assert call["state"] == "timed_out", call
    # The hung provider request was given up, not leaked.
    wait_provider_aborted(deadline_daemon.provider, stats_before["aborted"])


async def test_stdio_unknown_tool(daemon: Daemon) -> None:
    async with legacy_session(daemon, "stdio") as session:
        with pytest.raises(MCPError) as excinfo:
            await session.call_tool("no_such_tool_xyz", {})
        assert excinfo.value.error.code == INVALID_PARAMS
        assert "no_such_tool_xyz" in excinfo.value.error.message

        # The session is still usable afterwards.
        version = await session.call_tool("version", {})
        assert not version.is_error, version
        assert "exai" in text_of(version)


async def test_stdio_no_daemon(fake_provider: FakeProvider, tmp_path: Path) -> None:
    home = tmp_path / "exai-home"
    home.mkdir()
    params = StdioServerParameters(
        command=str(EXAI_BIN),
        args=["stdio", "--no-daemon"],
        env={
            "EXAI_HOME": str(home),
            "CUSTOM_API_URL": fake_provider.api_url,
            "CUSTOM_MODEL_NAME": "fake-fast",
            **store_env(home),
        },
    )
    async with stdio_streams(params, home) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            assert {t.name for t in (await session.list_tools()).tools} == TOOLS
            result = await session.call_tool("chat", {"prompt": "served in-process", "model": "fake-fast"})
            assert not result.is_error, result
            assert text_of(result) == "echo: served in-process"
            call_id = call_id_of(result)
            version = await session.call_tool("version", {})
            assert version.structured_content is not None
            assert version.structured_content["mode"] != "daemon", version.structured_content

    assert not (home / "daemon.json").exists(), "--no-daemon must not start a daemon"
    out = subprocess.run(
        [str(EXAI_BIN), "calls", "show", call_id, "--json"],
        env=clean_env(EXAI_HOME=str(home)),
        capture_output=True,
        timeout=20,
        check=True,
    )
    assert json.loads(out.stdout)["call"]["state"] == "succeeded"


# --------------------------------------------------------------------------- Streamable HTTP


async def test_http_initialize_list_and_chat(daemon: Daemon) -> None:
    async with http_streams(daemon) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            assert init.server_info.name == "exai"
            assert init.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS
            assert {t.name for t in (await session.list_tools()).tools} == TOOLS

            result = await session.call_tool("chat", {"prompt": "hello over http", "model": "fake-fast"})
            assert not result.is_error, result
            assert text_of(result) == "echo: hello over http"
            call_id = call_id_of(result)

            version = await session.call_tool("version", {})
            assert version.structured_content is not None
            assert version.structured_content["transport"] == "http"

    call = daemon.call_record(call_id)["call"]
    assert call["state"] == "succeeded"
    assert call["transport"] == "http"
    # Written with the call's end, committed before the answer was sent.
    assert call["delivery"] == "handed_to_http"


async def test_http_progress(daemon: Daemon) -> None:
    progress = ProgressRecorder()
    async with legacy_session(daemon, "http") as session:
        result = await session.call_tool(
            "chat", {"prompt": "p", "model": "fake-stream-6x500"}, progress_callback=progress
        )
    assert not result.is_error, result
    assert text_of(result).endswith("echo: p")
    progress.assert_heartbeats("fake-stream-6x500")


async def test_http_wrong_token_fails(daemon: Daemon) -> None:
    with pytest.raises(BaseException) as excinfo:  # noqa: PT011 - the SDK wraps it in ExceptionGroups
        with anyio.fail_after(15):
            async with http_streams(daemon, token="not-the-token") as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
    leaves = leaf_exceptions(excinfo.value)
    assert any(isinstance(e, MCPError) for e in leaves), f"expected an MCPError, got {leaves!r}"


def test_http_without_token_is_401_and_names_token_file(daemon: Daemon) -> None:
    status, body = raw_post(daemon.mcp_url, {})
    assert status == 401, body
    assert str(daemon.token_path) in body, body

    status, body = raw_post(daemon.mcp_url, {"Authorization": "Bearer wrong"})
    assert status == 401, body
    assert str(daemon.token_path) in body, body

    # DNS-rebinding guard: a foreign Host header is refused even with the right token.
    status, body = raw_post(
        daemon.mcp_url, {"Authorization": f"Bearer {daemon.token}", "Host": f"evil.example:{daemon.listen.split(':')[1]}"}
    )
    assert status == 403, body

    # /healthz needs no token.
    assert daemon.healthz()["status"] == "ok"


# --------------------------------------------------------------------------- modern era (mcp.Client, mode="auto")


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_modern_client_chat_and_progress(daemon: Daemon, transport: str) -> None:
    async with modern_client(daemon, transport) as client:
        assert client.protocol_version in MODERN_PROTOCOL_VERSIONS
        result = await client.call_tool("chat", {"prompt": "modern hello", "model": "fake-fast"})
        assert not result.is_error, result
        assert text_of(result) == "echo: modern hello"
        call_id_of(result)

        progress = ProgressRecorder()
        streamed = await client.call_tool(
            "chat", {"prompt": "p", "model": "fake-stream-6x500"}, progress_callback=progress
        )
        assert not streamed.is_error, streamed
        assert text_of(streamed).endswith("echo: p")
        progress.assert_heartbeats("fake-stream-6x500")


# --------------------------------------------------------------------------- client read timeouts




@pytest.mark.parametrize(
    ("era", "transport"),
    [
        ("legacy", "stdio"),
        ("legacy", "http"),
        ("modern", "stdio"),
        ("modern", "http"),
    ],
)
async def test_read_timeout_cancels_call(daemon: Daemon, era: str, transport: str) -> None:
    """A client read timeout (1 s) on a 3 s call: the SDK raises REQUEST_TIMEOUT and
    (mcp 2.x) cancels the request, so exai must cancel the call and abort the provider request."""
    prompt = unique(f"read-timeout {era} {transport}")
    aborted_before = daemon.provider.stats()["aborted"]
    cm = (
        legacy_session(daemon, transport, read_timeout_seconds=1.0)
        if era == "legacy"
        else modern_client(daemon, transport, read_timeout_seconds=1.0)
    )
    async with cm as client:
        started = time.monotonic()
        with pytest.raises(MCPError) as excinfo:
            await client.call_tool("chat", {"prompt": prompt, "model": "fake-delay-3000"})
        elapsed = time.monotonic() - started
        assert excinfo.value.error.code == REQUEST_TIMEOUT, excinfo.value
        assert 0.9 <= elapsed < 2.5, f"client timeout fired after {elapsed:.2f} s"

        # The connection survives the timeout.
        version = await client.call_tool("version", {})
        assert not version.is_error, version

    assert daemon.healthz()["status"] == "ok"
    call = daemon.wait_call_state(prompt, TERMINAL_STATES)
    assert call["state"] == "cancelled", call
    wait_provider_aborted(daemon.provider, aborted_before)


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_read_timeout_silent_give_up_keeps_result(daemon: Daemon, transport: str) -> None:
    """A client that stops waiting without cancelling: exai finishes the call and keeps its result."""
    prompt = unique(f"silent give-up {transport}")
    async with legacy_session(daemon, transport, read_timeout_seconds=1.0, silent_give_up=True) as session:
        started = time.monotonic()
        with pytest.raises(MCPError) as excinfo:
            await session.call_tool("chat", {"prompt": prompt, "model": "fake-delay-3000"})
        elapsed = time.monotonic() - started
        assert excinfo.value.error.code == REQUEST_TIMEOUT, excinfo.value
        assert 0.9 <= elapsed < 2.5, f"client timeout fired after {elapsed:.2f} s"

        assert daemon.healthz()["status"] == "ok"
        running = daemon.find_call(prompt)
        assert running is not None and running["state"] == "running", running

        call = daemon.wait_call_state(prompt, TERMINAL_STATES)
        assert call["state"] == "succeeded", call
        assert f"echo: {prompt}" in call["result"], call

        # And the session is still usable.
        version = await session.call_tool("version", {})
        assert not version.is_error, version
    assert daemon.healthz()["status"] == "ok"
