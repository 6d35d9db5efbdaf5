"""Calls that outlive their client's patience, driven by the official MCP Python SDK.

The daemon here runs with `EXAI_CLIENT_PATIENCE="pytest-bg=5"`: every session of
this module introduces itself (clientInfo.name at initialize) as
`pytest-bg-<random>`, which that rule matches by prefix, so exai believes the
client gives up after 5 s and answers a still-running call at ~4 s (margin =
patience / 5, clamped to 1–10 s) with a call handle. The client's real read
timeout is 6 s: every answer — the handle and each `call_result` — must arrive
before it. The random suffix keeps `call_list` (filtered by client name) to the
calls of one test.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from mcp import ClientSession
from mcp.shared.exceptions import MCPError
from mcp.types import REQUEST_TIMEOUT, CallToolResult, Implementation, TextContent

from conftest import Daemon, FakeProvider, _start_daemon, stop_process
from test_python_sdk import NoCancelOnAbandonDispatcher, call_id_of, http_streams, stdio_streams, text_of, unique

pytestmark = pytest.mark.anyio

CLIENT_PREFIX = "pytest-bg"
PATIENCE_S = 5.0
ANSWER_AT_S = PATIENCE_S - 1.0  # margin = patience / 5 = 1 s
CLIENT_READ_TIMEOUT_S = 6.0
ATTACHED_NOTE = "was already running; this request was attached to it"
TRANSPORTS = ["stdio", "http"]


# --------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def patient_daemon(tmp_path_factory: pytest.TempPathFactory, fake_provider: FakeProvider) -> Iterator[Daemon]:
    """A daemon that believes `pytest-bg*` clients wait 5 s for a tools/call."""
    d, stderr = _start_daemon(
        tmp_path_factory,
        fake_provider,
        "exai-home-patience",
        EXAI_CLIENT_PATIENCE=f"{CLIENT_PREFIX}={PATIENCE_S:g}",
        EXAI_PROGRESS_INTERVAL_S="0.5",
    )
    try:
        yield d
    finally:
        stop_process(d.proc)
        stderr.close()


def client_name() -> str:
    return f"{CLIENT_PREFIX}-{uuid.uuid4().hex[:8]}"


@asynccontextmanager
async def named_session(
    daemon: Daemon,
    transport: str,
    name: str,
    *,
    read_timeout_seconds: float | None = CLIENT_READ_TIMEOUT_S,
    silent_give_up: bool = False,
) -> AsyncIterator[ClientSession]:
    """An initialized handshake-era session that introduces itself as `name`.

    `silent_give_up`: a request the client stops waiting for (read timeout, or the
    session closing under it) is dropped without `notifications/cancelled`.
    """
    streams_cm = stdio_streams(daemon.stdio_params(), daemon.home) if transport == "stdio" else http_streams(daemon)
    info = Implementation(name=name, version="1.0")
    async with streams_cm as (read, write):
        if silent_give_up:
            session = ClientSession(
                dispatcher=NoCancelOnAbandonDispatcher(read, write),
                read_timeout_seconds=read_timeout_seconds,
                client_info=info,
            )
        else:
            session = ClientSession(read, write, read_timeout_seconds=read_timeout_seconds, client_info=info)
        async with session:
            await session.initialize()
            yield session


def model_requests(provider: FakeProvider, model: str) -> int:
    return int(provider.stats()["by_model"].get(model, 0))


def texts_of(result: CallToolResult) -> list[str]:
    return [c.text for c in result.content if isinstance(c, TextContent)]


def is_running(result: CallToolResult) -> bool:
    sc = result.structured_content
    return isinstance(sc, dict) and sc.get("status") == "running"


async def timed_call(session: ClientSession, tool: str, args: dict[str, Any]) -> tuple[CallToolResult, float]:
    started = time.monotonic()
    result = await session.call_tool(tool, args)
    return result, time.monotonic() - started


async def fetch_until_done(
    session: ClientSession, call_id: str, *, wait_s: float = 30, deadline_s: float = 30.0
) -> tuple[CallToolResult, list[float]]:
    """Poll `call_result` until the call is no longer running; every answer must beat the read timeout."""
    end = time.monotonic() + deadline_s
    timings: list[float] = []
    while True:
        result, took = await timed_call(session, "call_result", {"call_id": call_id, "wait_s": wait_s})
        timings.append(round(took, 2))
        assert took < CLIENT_READ_TIMEOUT_S, f"call_result answered after {took:.2f} s"
        assert not result.is_error, result
        if not is_running(result):
            return result, timings
        sc = result.structured_content
        assert sc["call_id"] == call_id, f"call_result answered about another call: {sc} (polls: {timings})"
        assert sc["poll_after_s"] == 5, sc
        assert time.monotonic() < end, f"call {call_id} still running after {deadline_s} s (polls: {timings})"


async def wait_running(daemon: Daemon, prompt: str) -> dict[str, Any]:
    return await anyio.to_thread.run_sync(lambda: daemon.wait_call_state(prompt, {"running"}, 10.0))


# --------------------------------------------------------------------------- 1. patience → handle → call_result


async def background_flow(daemon: Daemon, transport: str, model: str, delay_s: float, wait_s: float) -> None:
    """chat answers with a handle at ~4 s; call_result polls fetch the answer, each within the read timeout."""
    prompt = unique(f"background {transport}")
    name = client_name()
    before = model_requests(daemon.provider, model)
    started = time.monotonic()
    async with named_session(daemon, transport, name) as session:
        handle, took = await timed_call(session, "chat", {"prompt": prompt, "model": model})
        # Answered a safety margin before the (5 s) patience, not when the call ends.
        assert not handle.is_error, handle
        assert ANSWER_AT_S - 0.5 <= took < CLIENT_READ_TIMEOUT_S, f"handle came after {took:.2f} s"
        sc = handle.structured_content
        assert isinstance(sc, dict) and sc["status"] == "running", handle
        call_id = sc["call_id"]
        assert isinstance(call_id, str) and call_id
        assert sc["poll_after_s"] == 5, sc
        assert isinstance(sc["elapsed_s"], (int, float)) and sc["elapsed_s"] >= ANSWER_AT_S - 1, sc
        assert isinstance(sc["progress"], str) and model in sc["progress"], sc
        assert "call_result" in text_of(handle) and call_id in text_of(handle), text_of(handle)

        record = daemon.call_record(call_id)["call"]
        assert record["state"] == "running", record
        assert record["client_name"] == name, record

        final, polls = await fetch_until_done(session, call_id, wait_s=wait_s)
        total = time.monotonic() - started

    assert not final.is_error, final
    assert text_of(final) == f"echo: {prompt}", final
    assert call_id_of(final) == call_id, final.meta
    assert total >= delay_s - 0.5, f"the {delay_s} s call ended after {total:.2f} s?"
    assert len(polls) >= 2, f"expected at least one 'running' call_result before the answer: {polls}"
    assert model_requests(daemon.provider, model) - before == 1

    record = daemon.call_record(call_id)["call"]
    assert record["state"] == "succeeded", record
    assert record["delivery"] == "delivered_by_call_result", record


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_patience_handle_then_call_result(patient_daemon: Daemon, transport: str) -> None:
    """call_result(wait_s=30) until done: its wait is capped below the patience, so each poll
    answers (running, about the original call) before the client's 6 s read timeout."""
    await background_flow(patient_daemon, transport, "fake-delay-12000", 12.0, wait_s=30)


# --------------------------------------------------------------------------- 2. client gone → new session fetches


async def disconnect_then_fetch(daemon: Daemon, transport: str) -> str:
    """A session leaves mid-call (silently); a new session of the same client finds and fetches the call."""
    model = "fake-delay-3000"
    prompt = unique(f"disconnect {transport}")
    name = client_name()
    before = model_requests(daemon.provider, model)

    async with named_session(daemon, transport, name, silent_give_up=True) as session:
        async with anyio.create_task_group() as tg:
            tg.start_soon(session.call_tool, "chat", {"prompt": prompt, "model": model})
            running = await wait_running(daemon, prompt)
            tg.cancel_scope.cancel()  # the client stops waiting; the session closes below
    call_id = running["id"]

    async with named_session(daemon, transport, name) as session:
        listed = await session.call_tool("call_list", {"limit": 10})
        assert not listed.is_error, listed
        calls = listed.structured_content["calls"]
        chats = [c for c in calls if c["tool"] == "chat"]
        assert [c["call_id"] for c in chats] == [call_id], calls
        entry = chats[0]
        assert entry["state"] in {"running", "succeeded"}, entry
        assert isinstance(entry["age_s"], int) and entry["age_s"] >= 0, entry

        final, _ = await fetch_until_done(session, entry["call_id"])

    assert not final.is_error, final
    assert text_of(final) == f"echo: {prompt}", final
    assert call_id_of(final) == call_id
    assert model_requests(daemon.provider, model) - before == 1
    record = daemon.call_record(call_id)["call"]
    assert record["state"] == "succeeded", record
    # The abandoned request's late report (closed WebSocket / HTTP stream) must not undo this.
    assert record["delivery"] == "delivered_by_call_result", record
    return call_id


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_disconnected_client_result_fetched_by_new_session(patient_daemon: Daemon, transport: str) -> None:
    await disconnect_then_fetch(patient_daemon, transport)


# --------------------------------------------------------------------------- 3. identical retry attaches


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_identical_retry_attaches_to_running_call(patient_daemon: Daemon, transport: str) -> None:
    model = "fake-delay-3000"
    prompt = unique(f"retry {transport}")
    args = {"prompt": prompt, "model": model}
    before = model_requests(patient_daemon.provider, model)

    async with named_session(patient_daemon, transport, client_name(), silent_give_up=True) as session:
        started = time.monotonic()
        with pytest.raises(MCPError) as excinfo:
            await session.call_tool("chat", args, read_timeout_seconds=1.0)
        assert excinfo.value.error.code == REQUEST_TIMEOUT, excinfo.value
        first = patient_daemon.find_call(prompt)
        assert first is not None and first["state"] == "running", first

        retry = await session.call_tool("chat", args)
        took = time.monotonic() - started

    assert not retry.is_error, retry
    parts = texts_of(retry)
    assert parts and parts[0] == f"echo: {prompt}", parts
    assert ATTACHED_NOTE in parts[-1], parts
    assert first["id"] in parts[-1], parts
    assert took < 3.0 + 2.0, f"the retry answered {took:.2f} s after the first call began"
    assert model_requests(patient_daemon.provider, model) - before == 1

    records = [c for c in patient_daemon.calls() if prompt in (c.get("arguments") or "")]
    assert len(records) == 2 and first["id"] in {c["id"] for c in records}, records
    assert all(c["state"] == "succeeded" for c in records), records


# --------------------------------------------------------------------------- 4. bad call_result arguments


async def test_call_result_bad_arguments(patient_daemon: Daemon) -> None:
    async with named_session(patient_daemon, "stdio", client_name()) as session:
        malformed = await session.call_tool("call_result", {"call_id": "not-a-call-id"})
        assert malformed.is_error, malformed
        assert "not a call id" in text_of(malformed), text_of(malformed)
        assert "not-a-call-id" in text_of(malformed), text_of(malformed)

        unknown_id = str(uuid.uuid4())
        unknown = await session.call_tool("call_result", {"call_id": unknown_id, "wait_s": 1})
        assert unknown.is_error, unknown
        assert f"no call {unknown_id}" in text_of(unknown), text_of(unknown)

        negative = await session.call_tool("call_result", {"call_id": unknown_id, "wait_s": -1})
        assert negative.is_error, negative
        assert "wait_s" in text_of(negative), text_of(negative)

        cancel_unknown = await session.call_tool("call_cancel", {"call_id": unknown_id})
        assert cancel_unknown.is_error, cancel_unknown
        assert f"no call {unknown_id}" in text_of(cancel_unknown), text_of(cancel_unknown)

    # The daemon is fine afterwards.
    assert patient_daemon.healthz()["status"] == "ok"
