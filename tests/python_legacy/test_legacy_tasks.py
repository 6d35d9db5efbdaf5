"""2025-11-25 tasks, driven end to end by the MCP Python SDK 1.x over `exai stdio` and `/mcp`.

The 1.x SDK negotiates 2025-11-25 and runs a tool as a task with
`session.experimental.call_tool_as_task` (a `tools/call` with `params.task`), then
`get_task` / `poll_task` / `get_task_result` / `list_tasks` / `cancel_task`. exai serves
these over its call records: the task id is the call id, and the daemon's store has the
task's state and answer (`exai calls show ID`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from mcp import ClientSession
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.exceptions import McpError
from mcp.types import INVALID_PARAMS, METHOD_NOT_FOUND, CallToolResult, Implementation, InitializeResult, TextContent

from exai_shared_fixtures import Daemon, wait_until

pytestmark = pytest.mark.anyio

RELATED_TASK = "io.modelcontextprotocol/related-task"
CALL_ID_KEY = "exai.dev/callId"
TRANSPORTS = ["stdio", "http"]


@asynccontextmanager
async def streams(daemon: Daemon, transport: str) -> AsyncIterator[tuple[Any, Any]]:
    if transport == "stdio":
        async with stdio_client(daemon.stdio_params()) as (read, write):
            yield read, write
    else:
        headers = {"Authorization": f"Bearer {daemon.token}"}
        async with streamablehttp_client(daemon.mcp_url, headers=headers) as (read, write, _):
            yield read, write


@asynccontextmanager
async def legacy_session(
    daemon: Daemon, transport: str = "stdio"
) -> AsyncIterator[tuple[ClientSession, InitializeResult]]:
    """An initialized 1.x session, under a client name of its own (tasks/list is per client)."""
    info = Implementation(name=f"pytest-legacy-{uuid.uuid4().hex[:8]}", version="1.0")
    async with streams(daemon, transport) as (read, write):
        async with ClientSession(read, write, client_info=info) as session:
            init = await session.initialize()
            yield session, init


def unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex[:10]}"


def text_of(result: CallToolResult) -> str:
    parts = [c.text for c in result.content if isinstance(c, TextContent)]
    assert parts, f"no text content in {result!r}"
    return parts[0]


def stat(daemon: Daemon, key: str, model: str | None = None) -> int:
    stats = daemon.provider.stats()
    return int(stats[key].get(model, 0) if model else stats[key])


async def wait_for(what: str, probe: Any, deadline_s: float = 10.0) -> Any:
    return await anyio.to_thread.run_sync(lambda: wait_until(what, probe, deadline_s))


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_chat_runs_as_a_task_polled_to_its_answer(daemon: Daemon, transport: str) -> None:
    prompt = unique(f"legacy task {transport}")
    async with legacy_session(daemon, transport) as (session, init):
        assert init.protocolVersion == "2025-11-25"
        tasks = init.capabilities.tasks
        assert tasks is not None and tasks.requests is not None and tasks.requests.tools is not None, init
        assert tasks.requests.tools.call is not None and tasks.list is not None and tasks.cancel is not None, init

        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert tools["chat"].execution is not None and tools["chat"].execution.taskSupport == "optional"
        assert tools["version"].execution is None, "quick tools do not run as tasks"

        started = time.monotonic()
        created = await session.experimental.call_tool_as_task(
            "chat", {"prompt": prompt, "model": "fake-delay-2500"}, ttl=60000
        )
        assert time.monotonic() - started < 2.0, "the task must come at once, not after the call"
        task_id = created.task.taskId
        assert created.task.status == "working", created
        assert created.task.ttl is not None and created.task.ttl >= 60000, created
        assert created.task.pollInterval is not None, created

        first = await session.experimental.get_task(task_id)
        assert first.status == "working", first
        assert first.taskId == task_id
        listed = await session.experimental.list_tasks()
        assert [t.taskId for t in listed.tasks] == [task_id], listed

        statuses = [status.status async for status in session.experimental.poll_task(task_id)]
        assert statuses[0] == "working" and statuses[-1] == "completed", statuses

        result = await session.experimental.get_task_result(task_id, CallToolResult)
        assert not result.isError, result
        assert text_of(result) == f"echo: {prompt}", result
        assert result.meta is not None and result.meta[RELATED_TASK] == {"taskId": task_id}, result.meta
        assert result.meta[CALL_ID_KEY] == task_id, "the task is the call"

    record = daemon.call_record(task_id)["call"]
    assert record["state"] == "succeeded", record
    assert record["task"] == "2025-11-25", record
    assert record["delivery"] == "delivered_by_tasks_result", record


async def test_task_result_waits_for_the_end(daemon: Daemon) -> None:
    prompt = unique("blocking result")
    async with legacy_session(daemon) as (session, _):
        created = await session.experimental.call_tool_as_task("chat", {"prompt": prompt, "model": "fake-delay-1500"})
        started = time.monotonic()
        result = await session.experimental.get_task_result(created.task.taskId, CallToolResult)
        took = time.monotonic() - started
        assert text_of(result) == f"echo: {prompt}", result
        assert took > 0.5, f"tasks/result answered after {took:.2f} s: it did not wait for the call"
        done = await session.experimental.get_task(created.task.taskId)
        assert done.status == "completed", done


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_cancel_stops_the_model_call(daemon: Daemon, transport: str) -> None:
    prompt = unique(f"cancel me {transport}")
    aborted_before = stat(daemon, "aborted")
    hang_before = stat(daemon, "by_model", "fake-hang")
    async with legacy_session(daemon, transport) as (session, _):
        created = await session.experimental.call_tool_as_task("chat", {"prompt": prompt, "model": "fake-hang"})
        task_id = created.task.taskId
        await wait_for("the call at the provider", lambda: stat(daemon, "by_model", "fake-hang") > hang_before)

        cancelled = await session.experimental.cancel_task(task_id)
        assert cancelled.status == "cancelled", cancelled
        assert cancelled.taskId == task_id
        await wait_for("the provider request aborted", lambda: stat(daemon, "aborted") > aborted_before)
        assert (await session.experimental.get_task(task_id)).status == "cancelled"

        with pytest.raises(McpError) as again:
            await session.experimental.cancel_task(task_id)
        assert again.value.error.code == INVALID_PARAMS, again.value.error
        assert "already cancelled" in again.value.error.message, again.value.error

        result = await session.experimental.get_task_result(task_id, CallToolResult)
        assert result.isError, result
        assert "cancelled by the client" in text_of(result), result

    record = daemon.call_record(task_id)["call"]
    assert record["state"] == "cancelled", record


async def test_unknown_tasks_and_plain_calls(daemon: Daemon) -> None:
    unknown = str(uuid.uuid4())
    async with legacy_session(daemon) as (session, _):
        for ask in (session.experimental.get_task, session.experimental.cancel_task):
            with pytest.raises(McpError) as error:
                await ask(unknown)
            assert error.value.error.code == INVALID_PARAMS, error.value.error
            assert "expired or never existed" in error.value.error.message, error.value.error
        with pytest.raises(McpError) as error:
            await session.experimental.get_task_result(unknown, CallToolResult)
        assert error.value.error.code == INVALID_PARAMS, error.value.error

        # A tool that is no task says so; a call without params.task is answered as always.
        with pytest.raises(McpError) as error:
            await session.experimental.call_tool_as_task("version", {})
        assert error.value.error.code == METHOD_NOT_FOUND, error.value.error
        prompt = unique("plain call")
        plain = await session.call_tool("chat", {"prompt": prompt, "model": "fake-fast"})
        assert text_of(plain) == f"echo: {prompt}", plain
        assert plain.meta is not None and RELATED_TASK not in plain.meta, plain.meta
        assert (await session.experimental.list_tasks()).tasks == [], "a plain call is no task"
