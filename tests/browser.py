"""A small headless-Chromium driver for tests, over the Chrome DevTools Protocol (CDP).

Starts Debian's ``chromium`` (or ``$CHROMIUM``) headless with a fresh profile and a DevTools
port chosen by the browser (read back from ``DevToolsActivePort``), attaches to its page over
a websocket, and records every JavaScript exception and console/log error while it works::

    with Browser() as browser:
        browser.open("file:///tmp/report.html")
        n = browser.evaluate("document.querySelectorAll('.plotly').length")
        browser.screenshot(tmp_path / "page.png")
        assert browser.errors == []
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


def chromium_path() -> str:
    """The Chromium executable; the test fails (not skips) with the fix when it is missing."""
    found = (
        os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )
    if not found:
        pytest.fail(
            "headless Chromium is needed for the browser tests: run scripts/system-deps.sh "
            "(apt-get install chromium) or set CHROMIUM=/path/to/chromium"
        )
    return found


class Browser:
    """One headless Chromium with one page, driven over CDP."""

    def __init__(self, *, width: int = 1280, height: int = 900, timeout: float = 60.0) -> None:
        import websocket  # websocket-client, from the `test` extra

        self.timeout = timeout
        self.errors: list[str] = []  # JS exceptions, console.error calls, error log entries
        self._events: list[dict[str, Any]] = []
        self._next_id = 0
        self._profile = tempfile.mkdtemp(prefix="midl-autok-chromium-")
        self._proc = subprocess.Popen(
            [chromium_path(), *FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            port = self._devtools_port()
            page = self._page_target(port)
            self._ws = websocket.create_connection(
                page["webSocketDebuggerUrl"], timeout=timeout, suppress_origin=True
            )
            for domain in ("Page", "Runtime", "Log"):
                self.send(f"{domain}.enable")
            self.send(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
        except BaseException:
            self.close()
            raise

    # -- startup ----------------------------------------------------------------------------

    def _devtools_port(self) -> int:
        marker = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"chromium exited with status {self._proc.returncode}")
            if marker.exists():
                first = marker.read_text().splitlines()[:1]
                if first and first[0].strip().isdigit():
                    return int(first[0])
            time.sleep(0.05)
        raise TimeoutError("chromium did not open its DevTools port")

    def _page_target(self, port: int) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                targets = json.load(r)
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return dict(pages[0])
            time.sleep(0.05)
        raise TimeoutError("chromium has no page target")

    # -- protocol ---------------------------------------------------------------------------

    def _record(self, message: dict[str, Any]) -> None:
        method = message.get("method")
        params = message.get("params", {})
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            self.errors.append(f"exception: {text}")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = [str(a.get("value", a.get("description", ""))) for a in params.get("args", [])]
            self.errors.append(f"console.{params['type']}: {' '.join(args)}")
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())
        if method:
            self._events.append(message)

    def _receive(self) -> dict[str, Any]:
        message: dict[str, Any] = json.loads(self._ws.recv())
        self._record(message)
        return message

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        """Call one CDP method and return its ``result``; events seen meanwhile are recorded."""
        self._next_id += 1
        call_id = self._next_id
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = self._receive()
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method} failed: {message['error']}")
                return dict(message.get("result", {}))

    def wait_event(self, method: str, timeout: float | None = None) -> dict[str, Any]:
        """Wait for the next ``method`` event (or one that already arrived unclaimed)."""
        for i, event in enumerate(self._events):
            if event["method"] == method:
                del self._events[: i + 1]
                return event
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            message = self._receive()
            if message.get("method") == method:
                self._events.clear()
                return message
        raise TimeoutError(f"no {method} event within {timeout or self.timeout} s")

    # -- what tests use ---------------------------------------------------------------------

    def open(self, url: str) -> None:
        """Navigate and wait for the load event."""
        self._events.clear()
        result = self.send("Page.navigate", url=url)
        if result.get("errorText"):
            raise RuntimeError(f"cannot open {url}: {result['errorText']}")
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """Value of a JS expression (promises are awaited); a JS error raises."""
        result = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"JS error in {expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float | None = None) -> Any:
        """Poll a JS expression until it is truthy; return its value."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression!r} still falsy after {timeout or self.timeout} s")
            time.sleep(0.1)

    def screenshot(self, path: str | os.PathLike[str], *, full_page: bool = True) -> Path:
        """Write a PNG of the page (the whole scrollable page by default)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.send("Page.getLayoutMetrics")["cssContentSize"]
            params["clip"] = {"x": 0, "y": 0, "width": size["width"], "height": size["height"]}
            params["clip"]["scale"] = 1
            params["captureBeyondViewport"] = True
        data = self.send("Page.captureScreenshot", **params)["data"]
        out = Path(path)
        out.write_bytes(base64.b64decode(data))
        return out

    def close(self) -> None:
        ws = getattr(self, "_ws", None)
        if ws is not None:
            ws.close()
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        # Renderer and helper processes share the session this browser was started in.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
