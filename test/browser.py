"""Headless Chromium for the tests of the site's pages, driven by Playwright.

Playwright's synchronous API blocks its thread and must stay on the thread
that started it, while the pool's web service lives on the reactor: so a
whole browser session (launch, the test's steps, close) runs in one call
on a thread of the reactor's pool, and the test awaits its Deferred. The
reactor keeps serving the pages meanwhile.

The browser is Debian's Chromium (scripts/setup.sh installs it), never one
Playwright downloads: the tests run without a network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from playwright.sync_api import ConsoleMessage, Dialog, Page, Request, ViewportSize, sync_playwright
from twisted.internet import defer, threads

from test.servers import require

Result = TypeVar("Result")

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
STEP_TIMEOUT_MS = 20_000  # for each wait of a step; the page's data comes from a local server
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}


@dataclass
class PageWatch:
    """What the pages of a session did besides showing themselves."""

    base: str  # the site's origin: requests anywhere else are recorded
    dialogs: list[str] = field(default_factory=list)  # alert(), confirm()... messages
    script_errors: list[str] = field(default_factory=list)  # uncaught exceptions
    console_errors: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)

    def dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def request(self, request: Request) -> None:
        if not (request.url.startswith(self.base + "/") or request.url.startswith("data:")):
            self.foreign_requests.append(request.url)

    def watch(self, page: Page) -> Page:
        page.on("dialog", self.dialog)
        page.on("pageerror", lambda error: self.script_errors.append(str(error)))
        page.on("console", self.console)
        page.on("request", self.request)
        page.set_default_timeout(STEP_TIMEOUT_MS)
        return page


@dataclass
class Session:
    """One browser session's first page and its watch; ``new_page`` opens more in the same context."""

    page: Page
    watch: PageWatch

    def new_page(self) -> Page:
        return self.watch.watch(self.page.context.new_page())


def screenshot(page: Page, name: str) -> Path:
    """The whole page as artifacts/screenshots/<name>.png under the checkout."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _session(base: str, steps: Callable[[Session], Result], viewport: ViewportSize) -> Result:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=require("chromium"), headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = browser.new_context(viewport=viewport, base_url=base)
            watch = PageWatch(base)
            return steps(Session(watch.watch(context.new_page()), watch))
        finally:
            browser.close()


def browse(
    base: str, steps: Callable[[Session], Result], viewport: ViewportSize = DESKTOP
) -> defer.Deferred[Result]:
    """Run ``steps`` in a fresh headless Chromium on a thread; relative URLs go to ``base``."""
    return threads.deferToThread(_session, base, steps, viewport)
