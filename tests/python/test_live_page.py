"""The live page in real browsers: Playwright's Python package driving Debian's Chromium
(`/usr/bin/chromium`), and puppeteer-core driving Debian's Firefox ESR over WebDriver BiDi
(`firefox_page.mjs`; Playwright only drives its own patched Firefox builds) — no browser download —
each against a daemon of its own and the fake provider.

It logs in through the one-time link `exai open --print` gives, sees a slow call appear in flight
with its tokens moving, cancels it from the page and sees it end as cancelled, opens a finished
call's record, and saves screenshots to target/artifacts/ — all under the page's
Content-Security-Policy, which must refuse nothing the page does.
"""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, stdio_client
from playwright.async_api import Page, async_playwright, expect

from conftest import EXAI_BIN, REPO, Daemon, FakeProvider, _start_daemon, clean_env, stop_process

pytestmark = pytest.mark.anyio

CHROMIUM = Path(os.environ.get("EXAI_CHROMIUM") or "/usr/bin/chromium")
FIREFOX = Path(os.environ.get("EXAI_FIREFOX") or "/usr/bin/firefox-esr")
# Where scripts/test installs puppeteer-core from npm.
BROWSER_DRIVER = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target") / "browser-driver"
ARTIFACTS = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target") / "artifacts"
# 60 chunks, one every 150 ms: nine seconds of tokens arriving, plenty to watch and cancel.
SLOW_MODEL = "fake-stream-60x150"
WAIT_MS = 15_000


@pytest.fixture(scope="module")
def page_daemon(tmp_path_factory: pytest.TempPathFactory, fake_provider: FakeProvider) -> Iterator[Daemon]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium", pytrace=False)
    d, stderr = _start_daemon(tmp_path_factory, fake_provider, "exai-home-page", EXAI_PROGRESS_INTERVAL_S="0.5")
    try:
        yield d
    finally:
        stop_process(d.proc)
        stderr.close()


@pytest.fixture(scope="module")
def firefox_daemon(tmp_path_factory: pytest.TempPathFactory, fake_provider: FakeProvider) -> Iterator[Daemon]:
    missing = [
        f"{what} ({path})"
        for what, path in [
            ("Debian's firefox-esr", FIREFOX),
            ("puppeteer-core", BROWSER_DRIVER / "node_modules" / "puppeteer-core" / "package.json"),
        ]
        if not path.exists()
    ]
    if missing:
        pytest.fail(f"missing: {', '.join(missing)}; scripts/test installs them", pytrace=False)
    d, stderr = _start_daemon(tmp_path_factory, fake_provider, "exai-home-firefox", EXAI_PROGRESS_INTERVAL_S="0.5")
    try:
        yield d
    finally:
        stop_process(d.proc)
        stderr.close()


def login_link(daemon: Daemon) -> str:
    out = subprocess.run(
        [str(EXAI_BIN), "open", "--print"],
        env=clean_env(EXAI_HOME=str(daemon.home)),
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert out.returncode == 0, out.stderr.decode()
    link = out.stdout.decode().strip()
    assert link.startswith(f"http://{daemon.listen}/login?code="), link
    return link


def status_of(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> int:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310 - loopback only
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


async def chat(client: Client, prompt: str, model: str) -> Any:
    return await client.call_tool("chat", {"prompt": prompt, "model": model})


async def test_live_page_shows_cancels_and_opens_calls(page_daemon: Daemon) -> None:
    daemon = page_daemon
    with open(daemon.home.parent / "page-stdio-stderr.log", "a") as errlog:  # noqa: ASYNC230
        async with Client(stdio_client(daemon.stdio_params(), errlog=errlog)) as client:
            # Some history for the recent list and the charts: successes, a failure, two models.
            for n in range(3):
                await chat(client, f"warm-up {n}", "fake-fast")
            await chat(client, "a quick stream", "fake-stream-5x20")
            await chat(client, "this one fails", "fake-500")

            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=str(CHROMIUM))
                context = await browser.new_context(viewport={"width": 1440, "height": 1000})
                page = await context.new_page()
                refused: list[str] = []
                page.on(
                    "console",
                    lambda message: refused.append(message.text)
                    if "Content Security Policy" in message.text or message.type == "error"
                    else None,
                )
                page.on("pageerror", lambda error: refused.append(str(error)))
                try:
                    await logs_in(page, daemon, context)
                    await watch_and_cancel(page, client)
                    await open_a_record(page)
                finally:
                    await browser.close()
                assert refused == [], f"the page met errors or its policy refused something: {refused}"


async def logs_in(page: Page, daemon: Daemon, context: Any) -> None:
    link = login_link(daemon)
    await page.goto(link)
    # The code swapped for a cookie: the address bar holds no code, the cookie is out of scripts' reach.
    assert page.url == f"http://{daemon.listen}/", page.url
    cookies = await context.cookies()
    session = [c for c in cookies if c["name"] == "exai_page"]
    assert session and session[0]["httpOnly"] and session[0]["sameSite"] == "Strict", cookies
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=WAIT_MS)
    await expect(page.locator("#recent tbody tr")).to_have_count(5, timeout=WAIT_MS)
    # The link was single-use.
    assert status_of(link) == 401


async def watch_and_cancel(page: Page, client: Client) -> None:
    results: list[Any] = []

    async def slow_call() -> None:
        try:
            results.append(await chat(client, "a long answer to cancel", SLOW_MODEL))
        except Exception as error:  # noqa: BLE001 - the client may see the cancel as an error
            results.append(error)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(slow_call)
        row = page.locator("#in-flight tbody tr")
        await expect(row).to_have_count(1, timeout=WAIT_MS)
        await expect(row.locator("td").first).to_have_text("chat")
        tokens = row.locator(".tokens")
        # Progress moves: the token count grows while the call streams.
        await expect(tokens).not_to_have_text("0", timeout=WAIT_MS)
        first = int((await tokens.inner_text()).replace(",", ""))
        await page.wait_for_function(
            "(first) => Number(document.querySelector('#in-flight .tokens')?.textContent.replace(/,/g, '')) > first",
            arg=first,
            timeout=WAIT_MS,
        )
        await expect(row.locator(".elapsed")).not_to_have_text("", timeout=WAIT_MS)
        await expect(row.locator(".stage")).to_contain_text("stream", timeout=WAIT_MS)
        call_id = await row.get_attribute("data-call-id")
        await page.locator("#charts").scroll_into_view_if_needed()
        await page.evaluate("window.scrollTo(0, 0)")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "live-page.png"), full_page=True)

        await row.locator("button.cancel").click()
        await expect(page.locator("#in-flight tbody tr")).to_have_count(0, timeout=WAIT_MS)
    assert results, "the slow call came back"
    ended = page.locator(f'#recent tbody tr[data-call-id="{call_id}"] .outcome')
    await expect(ended).to_have_text("cancelled", timeout=WAIT_MS)


async def open_a_record(page: Page) -> None:
    finished = page.locator("#recent tbody tr", has_text="succeeded").first
    call_id = await finished.get_attribute("data-call-id")
    await finished.click()
    panel = page.locator("#record")
    await expect(panel).to_be_visible()
    await expect(panel.locator("#record-fields")).to_contain_text(call_id or "?")
    await expect(panel.locator("#record-answer")).not_to_be_empty()
    await expect(panel.locator("#record-arguments")).to_contain_text('"prompt"')
    await expect(panel.locator("#record-log")).to_contain_text("call finished")
    await page.screenshot(path=str(ARTIFACTS / "live-page-record.png"), full_page=False)


async def test_live_page_works_in_firefox(firefox_daemon: Daemon) -> None:
    daemon = firefox_daemon
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with open(daemon.home.parent / "firefox-stdio-stderr.log", "a") as errlog:  # noqa: ASYNC230
        async with Client(stdio_client(daemon.stdio_params(), errlog=errlog)) as client:
            await chat(client, "a finished call to open", "fake-fast")
            results: list[Any] = []

            async def slow_call() -> None:
                try:
                    # Twice the Chromium test's stream: Firefox takes a few seconds to start.
                    results.append(await chat(client, "a long answer to cancel", "fake-stream-120x150"))
                except Exception as error:  # noqa: BLE001 - the client may see the cancel as an error
                    results.append(error)

            with anyio.fail_after(120):
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(slow_call)
                    driven = await anyio.run_process(
                        ["node", str(Path(__file__).parent / "firefox_page.mjs"), login_link(daemon), daemon.listen, str(ARTIFACTS)],
                        env=clean_env(EXAI_BROWSER_DRIVER_DIR=str(BROWSER_DRIVER), EXAI_FIREFOX=str(FIREFOX)),
                        check=False,
                    )
                    if driven.returncode != 0:
                        tasks.cancel_scope.cancel()
            output = (driven.stdout + driven.stderr).decode(errors="replace")
            assert driven.returncode == 0, output
            assert "cancelled and opened a record" in output, output
            assert results, "the slow call came back"
