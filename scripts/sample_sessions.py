#!/usr/bin/env python3
"""Print a sample session of every exai tool, as Markdown, for a release note.

What it does: in a temporary directory it creates a tiny Python project (``src/cache.py`` with a
bug, ``src/app.py`` using it; a git repository with one commit and a change staged), starts the
scripted fake LLM (``exai-fake-provider``) and one ``exai stdio --no-daemon`` session, and drives
it with the official MCP Python SDK (``ClientSession`` over ``stdio_client``). For every tool in
``tools/list`` it runs a short, realistic session (the workflow tools in two steps, chat with a
file and a follow-up, a streaming chat with its progress notifications, consensus with one model
failing, the call-handle tools on a finished chat call) and prints each request and its answer:

    ### <tool>
    → tools/call <tool> <arguments, compact JSON>
    ← <each text block, cut to ~600 characters>
    ← isError: <bool>

The fake provider answers every request with ``echo: <last user message>``, so "answers" show what
exai sent the model. Paths are rewritten: the project becomes ``/home/me/project``, exai's state
directory ``/home/me/.local/state/exai``, the fake provider ``127.0.0.1:9999``.

Run it (the binaries must be built: ``cargo build --workspace --bins``; the SDK is in ``.venv``, see
``scripts/python-env.sh``):

    .venv/bin/python scripts/sample_sessions.py > /tmp/samples.md

Options: ``--keep`` keeps the temporary directory (and exai's stderr log) and names it on stderr.
Binaries: ``$EXAI_BIN`` / ``$EXAI_FAKE_BIN``, else ``target/debug/{exai,exai-fake-provider}``.

Exit status: 0 when every call that should succeed did (the consensus with one failing model
counts as a success), 1 when any call failed, hung (every call is bounded) or a tool of
``tools/list`` has no sample here, 2 when it could not start. Diagnostics go to stderr. Every
process it starts is stopped (terminated, then killed) before it exits.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.types import CallToolResult, TextContent

REPO = Path(__file__).resolve().parents[1]
EXAI_BIN = Path(os.environ.get("EXAI_BIN") or REPO / "target" / "debug" / "exai")
EXAI_FAKE_BIN = Path(os.environ.get("EXAI_FAKE_BIN") or REPO / "target" / "debug" / "exai-fake-provider")

CALL_ID_KEY = "exai.dev/callId"
SHOWN_PROJECT = "/home/me/project"
SHOWN_HOME = "/home/me/.local/state/exai"
SHOWN_PROVIDER = "127.0.0.1:9999"

MAX_BLOCK_CHARS = 600  # each text block of an answer is cut to this many characters
STARTUP_TIMEOUT_S = 20.0  # fake provider announcement, MCP initialize, tools/list
CALL_TIMEOUT_S = 60.0  # any one tools/call (the SDK's read timeout, and a hard bound around it)
TOTAL_TIMEOUT_S = 600.0  # the whole run
GRACE_S = 5.0  # between terminate and kill

CACHE_PY = '''\
"""A small in-memory cache whose entries expire."""

import time


class Cache:
    def __init__(self, ttl_s: float = 60.0) -> None:
        self.ttl_s = ttl_s
        self._items: dict[str, tuple[object, float]] = {}

    def set(self, key: str, value: object) -> None:
        self._items[key] = (value, time.time() + self.ttl_s)

    def get(self, key: str, default: object = None) -> object:
        value, expires_at = self._items.get(key, (default, 0.0))
        if expires_at > time.time():  # BUG: inverted, fresh entries look expired
            return default
        return value
'''

CACHE_PY_STAGED = CACHE_PY + '''
    def clear(self) -> None:
        """Forget every entry (for tests)."""
        self._items.clear()
'''

APP_PY = '''\
"""Looks users up, through the cache."""

from cache import Cache

_cache = Cache(ttl_s=30)


def load_user(user_id: str) -> dict:
    return {"id": user_id, "name": f"user {user_id}"}


def user(user_id: str) -> dict:
    found = _cache.get(user_id)
    if found is None:
        found = load_user(user_id)
        _cache.set(user_id, found)
    return found
'''


# --------------------------------------------------------------------------- processes and project


def log(message: str) -> None:
    print(f"sample_sessions: {message}", file=sys.stderr, flush=True)


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """Terminate one process we started (by its handle), killing it if it lingers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=GRACE_S)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without anything that configures exai, a provider or git."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EXAI_", "CUSTOM_", "GIT_")) and not k.endswith("_API_KEY") and k != "RUST_LOG"
    }
    env.update(extra)
    return env


def git(project: Path, *args: str) -> None:
    env = clean_env(
        GIT_AUTHOR_NAME="Sample Author",
        GIT_AUTHOR_EMAIL="author@example.com",
        GIT_AUTHOR_DATE="2026-01-15T10:00:00Z",
        GIT_COMMITTER_NAME="Sample Author",
        GIT_COMMITTER_EMAIL="author@example.com",
        GIT_COMMITTER_DATE="2026-01-15T10:00:00Z",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
    )
    subprocess.run(
        ["git", "-c", "commit.gpgsign=false", "-c", "init.defaultBranch=main", *args],
        cwd=project,
        env=env,
        check=True,
        capture_output=True,
        timeout=30,
    )


def make_project(project: Path) -> None:
    """src/cache.py (buggy) and src/app.py committed; a new Cache.clear() staged (the bug stays)."""
    (project / "src").mkdir(parents=True)
    (project / "src" / "cache.py").write_text(CACHE_PY)
    (project / "src" / "app.py").write_text(APP_PY)
    (project / "README.md").write_text("# users\n\nLooks users up, with a small expiring cache.\n")
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "Add the user lookup and its cache")
    (project / "src" / "cache.py").write_text(CACHE_PY_STAGED)
    git(project, "add", "src/cache.py")


def start_fake_provider(logfile: Any) -> tuple[subprocess.Popen[bytes], str]:
    """Start the fake provider; returns it and its base URL (http://127.0.0.1:PORT)."""
    proc = subprocess.Popen(
        [str(EXAI_FAKE_BIN), "--listen", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=logfile,
        env=clean_env(),
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], STARTUP_TIMEOUT_S)
    line = proc.stdout.readline().decode().strip() if ready else ""
    if not line.startswith("LISTENING http://"):
        stop_process(proc)
        raise RuntimeError(f"the fake provider did not announce itself (got {line!r})")
    return proc, line.split(" ", 1)[1].rstrip("/")


# --------------------------------------------------------------------------- Markdown


@dataclass
class Sanitizer:
    """Rewrites the run's temporary paths and port to the stable ones shown in the samples."""

    pairs: list[tuple[str, str]] = field(default_factory=list)

    def add(self, real: str, shown: str) -> None:
        for variant in {real, os.path.realpath(real)}:
            self.pairs.append((variant, shown))
        self.pairs.sort(key=lambda p: len(p[0]), reverse=True)  # longest first: nested paths

    def __call__(self, text: str) -> str:
        for real, shown in self.pairs:
            text = text.replace(real, shown)
        return text


def cut(text: str, limit: int = MAX_BLOCK_CHARS) -> str:
    """At most ~`limit` characters: the start and the end of `text`, the cut middle counted.

    The fake model echoes what it was sent, files first and the question last, and workflow
    answers end with their status; so both ends are kept (cuts snap to line ends when close).
    """
    if len(text) <= limit:
        return text
    head_len = limit * 3 // 5
    tail_len = limit - head_len
    head = text[:head_len]
    newline, space = head.rfind("\n"), head.rfind(" ")
    if newline >= head_len * 2 // 3:
        head = head[:newline]
    elif space >= head_len - 30:
        head = head[:space]
    tail = text[-tail_len:]
    newline, space = tail.find("\n"), tail.find(" ")
    if 0 <= newline <= tail_len // 3:
        tail = tail[newline + 1 :]
    elif 0 <= space <= 30:
        tail = tail[space + 1 :]
    dropped = len(text) - len(head) - len(tail)
    return f"{head}\n… [{dropped} characters cut] …\n{tail}"


def fence_for(body: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    return "`" * max(3, longest + 1)


def compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def prefixed(marker: str, text: str) -> list[str]:
    """`marker` before the first line, continuation lines indented under it."""
    lines = text.split("\n")
    return [f"{marker} {lines[0]}"] + [f"  {line}" if line else "" for line in lines[1:]]


# --------------------------------------------------------------------------- the session


class Failure(Exception):
    """A call that should have succeeded did not."""


@dataclass
class Progress:
    started: float
    events: list[tuple[float, float, float | None, str | None]] = field(default_factory=list)

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.events.append((time.monotonic() - self.started, progress, total, message))


class Samples:
    def __init__(self, session: ClientSession, sanitize: Sanitizer) -> None:
        self.session = session
        self.sanitize = sanitize
        self.out: list[str] = []
        self.failures: list[str] = []

    def emit(self, *lines: str) -> None:
        self.out.extend(lines)

    def section(self, tool: str, what: str) -> None:
        self.emit(f"### {tool}", "", what, "")

    async def call(
        self,
        tool: str,
        arguments: dict[str, Any],
        *,
        expect_error: bool = False,
        progress: bool = False,
        note: str | None = None,
    ) -> CallToolResult | None:
        """One tools/call, printed as a fenced request/answer block. None if it raised."""
        request = f"→ tools/call {tool} {self.sanitize(compact(arguments))}"
        body: list[str] = [request]
        recorder = Progress(time.monotonic()) if progress else None
        result: CallToolResult | None = None
        try:
            with anyio.fail_after(CALL_TIMEOUT_S + 5):
                result = await self.session.call_tool(
                    tool, arguments, read_timeout_seconds=CALL_TIMEOUT_S, progress_callback=recorder
                )
        except Exception as exc:  # noqa: BLE001 - reported, and the run goes on
            body.append(f"← error: {type(exc).__name__}: {self.sanitize(str(exc))}")
            self.failures.append(f"{tool}: raised {type(exc).__name__}: {exc}")
        if recorder is not None:
            for at, value, total, message in recorder.events:
                of = f"/{total:g}" if total is not None else ""
                body.append(f"⋯ progress {value:g}{of} at +{at:.2f} s: {self.sanitize(message or '')}")
        if result is not None:
            for block in result.content:
                if isinstance(block, TextContent):
                    body.extend(prefixed("←", cut(self.sanitize(block.text))))
                else:
                    body.append(f"← [{block.type} content]")
            body.append(f"← isError: {str(bool(result.is_error)).lower()}")
            if bool(result.is_error) != expect_error:
                wanted = "an error" if expect_error else "a success"
                self.failures.append(f"{tool}: expected {wanted}, got isError={result.is_error}")
        if note:
            self.emit(note, "")
        text = "\n".join(body)
        fence = fence_for(text)
        self.emit(fence, text, fence, "")
        return result

    async def workflow(self, tool: str, what: str, first: dict[str, Any], last: dict[str, Any]) -> None:
        """Two steps: step 1 (next_step_required) then the final step with step 1's continuation_id."""
        self.section(tool, what)
        step1 = {"step_number": 1, "total_steps": 2, "next_step_required": True, **first}
        result = await self.call(tool, step1)
        continuation = continuation_of(result)
        if continuation is None:
            self.failures.append(f"{tool}: step 1 gave no continuation_id")
            return
        step2 = {
            "step_number": 2,
            "total_steps": 2,
            "next_step_required": False,
            "continuation_id": continuation,
            "model": "fake-fast",
            **last,
        }
        await self.call(tool, step2)


def text_blocks(result: CallToolResult | None) -> list[str]:
    return [c.text for c in result.content if isinstance(c, TextContent)] if result else []


def continuation_of(result: CallToolResult | None) -> str | None:
    """The continuation id: structuredContent, the JSON answer of a workflow, or chat's note."""
    if result is None:
        return None
    if isinstance(result.structured_content, dict) and result.structured_content.get("continuation_id"):
        return str(result.structured_content["continuation_id"])
    for text in text_blocks(result):
        try:
            answer = json.loads(text)
        except ValueError:
            match = re.search(r"continuation_id[\"':= ]+([0-9A-Za-z-]{8,})", text)
            if match:
                return match.group(1)
            continue
        if isinstance(answer, dict) and answer.get("continuation_id"):
            return str(answer["continuation_id"])
    return None


def call_id_of(result: CallToolResult | None) -> str | None:
    if result is None or not result.meta:
        return None
    value = result.meta.get(CALL_ID_KEY)
    return value if isinstance(value, str) and value else None


# --------------------------------------------------------------------------- the samples


async def run_samples(s: Samples, project: Path, tools: list[str]) -> None:
    cache = str(project / "src" / "cache.py")
    app = str(project / "src" / "app.py")
    src = str(project / "src")
    bug = "Cache.get returns the default even right after set(): users are loaded on every request"
    inverted = "In Cache.get the expiry test is inverted: `expires_at > time.time()` treats fresh entries as expired."
    chat_ids: list[str] = []

    async def chat() -> None:
        s.section("chat", "A question with a file attached, then a follow-up in the same conversation.")
        first = await s.call("chat", {
            "prompt": "Why does get() miss right after set()?", "model": "fake-fast", "files": [cache],
        })
        if (cid := call_id_of(first)) is not None:
            chat_ids.append(cid)
        else:
            s.failures.append("chat: no call id in _meta")
        continuation = continuation_of(first)
        if continuation is None:
            s.failures.append("chat: no continuation_id in the answer")
            return
        await s.call("chat", {
            "prompt": "And should expired entries be evicted?", "model": "fake-fast",
            "continuation_id": continuation,
        })
        await s.call(
            "chat",
            {"prompt": "Summarise the fix in one line.", "model": "fake-stream-5x200"},
            progress=True,
            note="A streaming model (5 chunks, 200 ms apart), with the `notifications/progress` the client "
            "received (⋯): one at the start, then on stage changes (at most one per 250 ms) and a heartbeat "
            "every `EXAI_PROGRESS_INTERVAL_S` (5 s by default, longer than this answer took):",
        )

    async def challenge() -> None:
        s.section("challenge", "Pushback to reassess rather than accept (no model call).")
        await s.call("challenge", {
            "prompt": "You are wrong: time.time() is fine for expiry, monotonic clocks are overkill.",
        })

    async def thinkdeep() -> None:
        await s.workflow(
            "thinkdeep", "Weighing a design question, then asking the expert model.",
            {
                "step": "Should Cache use time.monotonic() instead of time.time() for expiry?",
                "findings": "Expiry compares wall-clock times; a clock step (NTP) could expire or keep every entry.",
                "problem_context": "Single-process service, entries live 30 s.",
                "focus_areas": ["correctness", "simplicity"],
            },
            {
                "step": "Compared both clocks for this cache.",
                "findings": "monotonic() is immune to clock steps and costs the same.",
                "hypothesis": "Switch to time.monotonic(); nothing persists the timestamps.",
                "confidence": "high",
                "relevant_files": [cache],
            },
        )

    async def debug() -> None:
        await s.workflow(
            "debug", "Investigating a bug: step 1 is paused for investigation, the last step asks the expert.",
            {"step": bug, "findings": "Reproduced: set('a', 1); get('a') returns None.", "files_checked": [app]},
            {
                "step": "Read Cache.get.",
                "findings": inverted,
                "hypothesis": "Invert the comparison (and evict expired entries).",
                "confidence": "very_high",
                "relevant_files": [cache],
                "relevant_context": ["Cache.get"],
            },
        )

    async def analyze() -> None:
        await s.workflow(
            "analyze", "A quality analysis of the project's source.",
            {
                "step": "Assess the code quality of the user lookup and its cache.",
                "relevant_files": [src], "analysis_type": "quality", "output_format": "summary",
                "findings": "Two modules; app.py keeps a module-level cache.",
            },
            {
                "step": "Read both modules.",
                "findings": "The cache never evicts; the global cache makes app.py hard to test.",
                "relevant_files": [cache, app],
                "confidence": "high",
            },
        )

    async def codereview() -> None:
        await s.workflow(
            "codereview", "A quick review of cache.py, with an issue found on the way.",
            {
                "step": "Review src/cache.py for correctness.", "relevant_files": [cache],
                "review_type": "quick", "findings": "Starting with get() and set().",
            },
            {
                "step": "Reviewed get() and set().",
                "findings": inverted,
                "issues_found": [{"severity": "high", "description": "Inverted expiry check in Cache.get", "location": "src/cache.py:16"}],
                "relevant_files": [cache],
                "confidence": "high",
            },
        )

    async def precommit() -> None:
        await s.workflow(
            "precommit", "Checking a staged change before committing (exai reads the repository and the diff itself).",
            {
                "step": "Validate the staged change to src/cache.py (a new Cache.clear() for tests) before committing.",
                "path": str(project), "include_staged": True, "include_unstaged": False,
                "findings": "One staged file.",
            },
            {
                "step": "Read the staged diff.",
                "findings": "clear() is correct; the inverted expiry check in get() is untouched (separate fix).",
                "relevant_files": [cache],
                "confidence": "high",
            },
        )

    async def refactor() -> None:
        await s.workflow(
            "refactor", "Looking for code smells in the cache.",
            {
                "step": "Find code smells in src/cache.py.", "relevant_files": [cache],
                "refactor_type": "codesmells", "findings": "Small class, one public pair of methods.",
            },
            {
                "step": "Looked at the tuple storage and the clock.",
                "findings": "A named tuple or dataclass would make (value, expires_at) clearer; the clock could be injected.",
                "relevant_files": [cache],
                "confidence": "partial",
            },
        )

    async def testgen() -> None:
        await s.workflow(
            "testgen", "Planning tests for the cache.",
            {
                "step": "Write tests for Cache: hit, miss, expiry.", "relevant_files": [cache],
                "findings": "get/set/ttl_s; time.time() must be faked.",
            },
            {
                "step": "Listed the cases.",
                "findings": "Hit before expiry, miss after expiry, default for unknown keys, overwrite resets expiry.",
                "relevant_files": [cache],
                "confidence": "high",
            },
        )

    async def secaudit() -> None:
        await s.workflow(
            "secaudit", "A light security audit of the lookup path.",
            {
                "step": "Audit the user lookup and its cache.", "relevant_files": [app, cache],
                "audit_focus": "owasp", "threat_level": "low",
                "security_scope": "Internal service; user ids come from authenticated requests.",
                "findings": "No I/O besides the lookup.",
            },
            {
                "step": "Checked inputs and memory use.",
                "findings": "The cache is unbounded: many distinct ids grow memory without limit.",
                "issues_found": [{"severity": "medium", "description": "Unbounded cache growth (memory DoS)"}],
                "relevant_files": [app, cache],
                "confidence": "high",
            },
        )

    async def docgen() -> None:
        await s.workflow(
            "docgen", "Documenting two files; exai keeps count and lets the agent finish only when both are done.",
            {
                "step": "Document src/cache.py and src/app.py.", "relevant_files": [cache, app],
                "num_files_documented": 0, "total_files_to_document": 2,
                "findings": "Neither file documents its functions.",
            },
            {
                "step": "Documented both files.", "findings": "Docstrings added to every function.",
                "num_files_documented": 2, "total_files_to_document": 2,
                "relevant_files": [cache, app],
            },
        )

    async def tracer() -> None:
        await s.workflow(
            "tracer", "Tracing the execution of app.user() (precision mode).",
            {
                "step": "Trace app.user() down to the cache.", "trace_mode": "precision",
                "target_description": "How a user lookup uses the cache.", "relevant_files": [app],
                "findings": "user() calls Cache.get, then load_user and Cache.set on a miss.",
            },
            {
                "step": "Followed Cache.get and Cache.set.",
                "findings": "user → Cache.get (always a miss, see the inverted check) → load_user → Cache.set.",
                "relevant_files": [app, cache],
                "relevant_context": ["user", "Cache.get", "Cache.set", "load_user"],
            },
        )

    async def planner() -> None:
        await s.workflow(
            "planner", "Planning the fix as steps.",
            {"step": "Plan: fix the cache expiry bug and ship it safely."},
            {"step": "1. Fix the comparison. 2. Evict expired entries. 3. Add tests with a fake clock. 4. Release."},
        )

    async def consensus() -> None:
        s.section(
            "consensus",
            "Three models asked at once, each with a stance; `fake-500` fails and the others still answer "
            "(a partial result, not an error).",
        )
        await s.call("consensus", {
            "step": "Should the cache switch from time.time() to time.monotonic()?",
            "models": [
                {"model": "fake-delay-300", "stance": "for"},
                {"model": "fake-delay-301", "stance": "against"},
                {"model": "fake-500", "stance": "neutral"},
            ],
            "relevant_files": [cache],
        })

    async def simple(tool: str, what: str) -> None:
        s.section(tool, what)
        await s.call(tool, {})

    async def call_list() -> None:
        s.section("call_list", "This client's recent calls.")
        await s.call("call_list", {"limit": 5})

    async def call_result() -> None:
        s.section("call_result", "Fetching the stored answer of the first chat call by its id (`_meta[\"exai.dev/callId\"]`).")
        if not chat_ids:
            s.failures.append("call_result: no chat call id to ask about")
            return
        await s.call("call_result", {"call_id": chat_ids[0], "wait_s": 5})

    async def call_cancel() -> None:
        s.section("call_cancel", "Cancelling a call that has already finished.")
        if not chat_ids:
            s.failures.append("call_cancel: no chat call id to cancel")
            return
        await s.call("call_cancel", {"call_id": chat_ids[0]})

    async def clink() -> None:
        s.section("clink", "A dry run: the command a Claude Code sub-agent would be started with, run nothing.")
        await s.call("clink", {"prompt": f"Fix this bug and run the tests: {bug}", "files": [cache], "dry_run": True})

    async def threads() -> None:
        s.section("threads", "Finding the chat conversation again by words from its first question.")
        await s.call("threads", {"find": "get miss"})

    scenarios: dict[str, Callable[[], Awaitable[None]]] = {
        "chat": chat,
        "challenge": challenge,
        "thinkdeep": thinkdeep,
        "debug": debug,
        "analyze": analyze,
        "codereview": codereview,
        "precommit": precommit,
        "refactor": refactor,
        "testgen": testgen,
        "secaudit": secaudit,
        "docgen": docgen,
        "tracer": tracer,
        "planner": planner,
        "consensus": consensus,
        "clink": clink,
        "threads": threads,
        "listmodels": lambda: simple("listmodels", "The models exai can use, with aliases and context windows."),
        "version": lambda: simple("version", "Which exai answers, and how it runs."),
        "status": lambda: simple("status", "What is running and what failed lately."),
        "call_list": call_list,
        "call_result": call_result,
        "call_cancel": call_cancel,
    }
    for name in [t for t in tools if t not in scenarios]:
        s.failures.append(f"{name}: listed by tools/list but this script has no sample for it")
    for name in [t for t in scenarios if t not in tools]:
        s.failures.append(f"{name}: has a sample here but is not in tools/list")
    for name, scenario in scenarios.items():
        if name in tools:
            await scenario()


async def run(root: Path, provider_url: str, errlog: Any, sanitize: Sanitizer) -> tuple[list[str], list[str]]:
    project = root / "project"
    home = root / "exai-home"
    home.mkdir()
    params = StdioServerParameters(
        command=str(EXAI_BIN),
        args=["stdio", "--no-daemon"],
        env={"EXAI_HOME": str(home), "CUSTOM_API_URL": f"{provider_url}/v1", "CUSTOM_MODEL_NAME": "fake-fast"},
        cwd=str(project),
    )
    signalled: list[int] = []

    async def stop_on_signal(scope: anyio.CancelScope) -> None:
        """SIGINT/SIGTERM cancel the session; the SDK then stops exai (bounded) on the way out."""
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                signalled.append(signum)
                scope.cancel()
                return

    with anyio.fail_after(TOTAL_TIMEOUT_S):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_on_signal, tg.cancel_scope)
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write, read_timeout_seconds=CALL_TIMEOUT_S) as session:
                    with anyio.fail_after(STARTUP_TIMEOUT_S):
                        init = await session.initialize()
                        listed = await session.list_tools()
                    tools = [t.name for t in listed.tools]
                    samples = Samples(session, sanitize)
                    await run_samples(samples, project, tools)
            tg.cancel_scope.cancel()  # done: stop listening for signals
    if signalled:
        raise KeyboardInterrupt

    version = getattr(init.server_info, "version", "")
    head = [
        "## Sample sessions",
        "",
        f"One `exai stdio --no-daemon` session (exai {version}, protocol {init.protocol_version}) driven by the "
        "official MCP Python SDK, with the scripted fake provider behind it: every model answers "
        "`echo: <the last message it was sent>`, so each answer shows what exai asked the model. "
        f"`tools/list` has {len(tools)} tools: {', '.join(f'`{t}`' for t in tools)}. "
        f"Text blocks longer than {MAX_BLOCK_CHARS} characters are cut (…).",
        "",
    ]
    return head + samples.out, samples.failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory and name it on stderr")
    options = parser.parse_args()

    for path, var in ((EXAI_BIN, "EXAI_BIN"), (EXAI_FAKE_BIN, "EXAI_FAKE_BIN")):
        if not (path.is_file() and os.access(path, os.X_OK)):
            log(f"{path} not found or not executable: run `cargo build --workspace --bins` or set {var}")
            return 2
    if shutil.which("git") is None:
        log("git is needed (the precommit sample reads a staged change)")
        return 2

    # Outside the event loop SIGTERM unwinds like Ctrl-C, so the finally below stops what was
    # started; inside it, run() listens for both and cancels the session cleanly.
    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)

    root = Path(tempfile.mkdtemp(prefix="exai-samples-"))
    provider: subprocess.Popen[bytes] | None = None
    fake_log = open(root / "fake-provider-stderr.log", "wb")  # noqa: SIM115 - closed in finally
    exai_log = open(root / "exai-stderr.log", "w")  # noqa: SIM115 - closed in finally
    try:
        make_project(root / "project")
        provider, url = start_fake_provider(fake_log)
        sanitize = Sanitizer()
        sanitize.add(str(root / "project"), SHOWN_PROJECT)
        sanitize.add(str(root / "exai-home"), SHOWN_HOME)
        sanitize.add(str(root), "/tmp/exai-samples")
        sanitize.add(url.removeprefix("http://"), SHOWN_PROVIDER)
        try:
            lines, failures = anyio.run(run, root, url, exai_log, sanitize)
        except KeyboardInterrupt:
            log("interrupted")
            return 130
        except Exception as exc:  # noqa: BLE001 - a startup failure or the overall deadline
            exai_log.flush()
            tail = (root / "exai-stderr.log").read_text(errors="replace")[-4000:]
            log(f"the session failed: {type(exc).__name__}: {exc}\n--- exai stderr (tail) ---\n{tail}")
            return 1
        print("\n".join(lines).rstrip() + "\n")
        sys.stdout.flush()
        for failure in failures:
            log(f"FAILED {failure}")
        line_count = sum(line.count("\n") + 1 for line in lines)
        if line_count > 1500:
            log(f"warning: {line_count} lines of Markdown, more than the ~1,500 a release note can take")
        if failures:
            where = f"in {root / 'exai-stderr.log'}" if options.keep else "kept with --keep"
            log(f"{len(failures)} failure(s); exai's stderr log is {where}")
            return 1
        log(f"ok: {line_count} lines of Markdown")
        return 0
    finally:
        if provider is not None:
            stop_process(provider)
            if provider.stdout:
                provider.stdout.close()
        fake_log.close()
        exai_log.close()
        if options.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
