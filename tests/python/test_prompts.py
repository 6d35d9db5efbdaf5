"""exai's tools as MCP prompts (slash commands), driven by the official MCP Python SDK: a client
lists the prompts, gets the chat prompt with a person's arguments, and starts the tool from
what the prompt's message says."""

from __future__ import annotations

import json

import pytest
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, GetPromptResult, TextContent

from conftest import Daemon
from test_python_sdk import TOOLS, legacy_session, modern_client, text_of, unique

pytestmark = pytest.mark.anyio

# How long exai lets a 2026-07-28 client keep its tool and prompt lists (ms).
LIST_FRESH_MS = 600_000


def tool_arguments(prompt: GetPromptResult) -> dict[str, object]:
    """The arguments the prompt's message asks the agent to call the tool with (its JSON block)."""
    assert len(prompt.messages) == 1, prompt
    message = prompt.messages[0]
    assert message.role == "user"
    assert isinstance(message.content, TextContent), message
    text = message.content.text
    assert "```json\n" in text, text
    block = text.split("```json\n", 1)[1].split("\n```", 1)[0]
    return json.loads(block)


@pytest.mark.parametrize(("era", "transport"), [("legacy", "stdio"), ("legacy", "http"), ("modern", "http")])
async def test_a_prompt_starts_the_chat_tool(daemon: Daemon, era: str, transport: str) -> None:
    question = unique("what does a slash command do")
    if era == "modern":
        session_cm = modern_client(daemon, transport)
    else:
        session_cm = legacy_session(daemon, transport)
    async with session_cm as session:
        listed = await session.list_prompts()
        assert {p.name for p in listed.prompts} == TOOLS
        if era == "modern":
            assert (listed.ttl_ms, listed.cache_scope) == (LIST_FRESH_MS, "private")
        chat = next(p for p in listed.prompts if p.name == "chat")
        assert [(a.name, a.required) for a in chat.arguments or []] == [
            ("prompt", True),
            ("model", False),
            ("files", False),
        ]

        prompt = await session.get_prompt("chat", {"prompt": question, "model": "fake-fast"})
        arguments = tool_arguments(prompt)
        assert arguments == {"prompt": question, "model": "fake-fast"}

        result = await session.call_tool("chat", arguments)
        assert not result.is_error, result
        assert text_of(result) == f"echo: {question}"


async def test_a_prompt_without_its_required_argument_is_invalid_params(daemon: Daemon) -> None:
    async with legacy_session(daemon, "stdio") as session:
        with pytest.raises(MCPError) as missing:
            await session.get_prompt("chat", {"model": "fake-fast"})
        assert missing.value.error.code == INVALID_PARAMS
        assert "needs its prompt argument" in missing.value.error.message

        with pytest.raises(MCPError) as unknown:
            await session.get_prompt("no_such_prompt")
        assert unknown.value.error.code == INVALID_PARAMS
        assert "no prompt is named" in unknown.value.error.message
