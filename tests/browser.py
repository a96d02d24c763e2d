"""Real-browser helpers: Playwright driving the system Chromium (installed by .ci/setup-browser;
`playwright install` is never run), a page that records uncaught JavaScript errors, and a
local MLflow server to point it at.

Tests that use them skip, with the reason, where Chromium or Playwright is missing."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))


def skip_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"needs Chromium at {CHROMIUM} (run .ci/setup-browser as root)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "needs the playwright package (pinned in requirements.lock; `make install`)"
    return None


@contextlib.contextmanager
def chromium():
    """A headless system Chromium under Playwright (skips the test when unavailable)."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


class Page:
    """A fresh browser page that collects every uncaught page error (`pageerror`); `check()`
    fails the test if there was any. Use as a context manager: leaving it checks and closes."""

    def __init__(self, browser, viewport=(1600, 1000)):
        self.context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(f"{self.page.url}: {exc}"))

    def check(self) -> None:
        assert not self.errors, "uncaught page errors:\n" + "\n".join(self.errors)

    def __enter__(self):
        return self.page

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self.check()
        finally:
            self.context.close()
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http_ok(url: str, proc: subprocess.Popen | None = None, timeout: float = 180.0) -> float:
    """Poll `url` until it answers HTTP 200; returns the seconds waited."""
    t0 = time.perf_counter()
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{proc.args[:4]} exited with {proc.returncode} before {url} answered")
        if time.perf_counter() - t0 > timeout:
            raise AssertionError(f"{url} did not answer HTTP 200 within {timeout:.0f}s")
        time.sleep(0.25)


@contextlib.contextmanager
def mlflow_server(store: Path, log_path: Path):
    """`mlflow server` against a sqlite store on a free loopback port, as `make ui` starts it (one
    worker, no job runner); yields its base URL once it answers, and stops its process group."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                                 f"sqlite:///{store}", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(f"{base}/health", proc)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
