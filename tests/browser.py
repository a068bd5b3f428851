"""A headless chromium for tests, driven over the DevTools protocol through a pipe.

`--remote-debugging-pipe` makes chromium read protocol commands from fd 3 and write replies
and events to fd 4, each a JSON object ending in a NUL byte: no port, no websocket client and
no npm package (playwright talks to chromium the same way). Every browser gets a fresh profile
in a folder of its own, runs in its own process group and is stopped by that group's id.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

from tests.servers import stop_process_group

# Debian's package; `.ci/run` installs it. A test that needs it fails without it: never skip.
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--no-default-browser-check", "--hide-scrollbars", "--mute-audio")
WIDTH, HEIGHT = 1400, 900
COMMAND_TIMEOUT_S = 30.0
POLL_S = 0.2


class BrowserError(AssertionError):
    """Chromium is missing, died, or a page never showed what a test waited for."""


def chromium_or_fail() -> Path:
    if shutil.which(str(CHROMIUM)) is None:
        raise BrowserError(f"no chromium at {CHROMIUM}: apt-get install -y chromium (.ci/run does), "
                           "or set CHROMIUM to its path")
    return CHROMIUM


def _pipe_above_4(*, reader: bool) -> tuple[int, int]:
    """A pipe whose child end is numbered above 4, so that dup2-ing the two child ends onto
    fds 3 and 4 cannot overwrite one with the other."""
    r, w = os.pipe()
    child = w if not reader else r
    high = fcntl.fcntl(child, fcntl.F_DUPFD, 10)
    os.close(child)
    return (high, w) if reader else (r, high)


class Page:
    """One tab of a fresh chromium profile: navigate, wait for JS conditions, click, scroll,
    screenshot. `clicks` counts the clicks so far, for tests that bound how many a person needs."""

    def __init__(self, profile: Path, log: Path):
        exe = chromium_or_fail()
        profile.mkdir(parents=True, exist_ok=True)
        to_child, self._to_chrome = _pipe_above_4(reader=True)  # chromium reads commands from fd 3
        self._from_chrome, from_child = _pipe_above_4(reader=False)  # and writes replies to fd 4

        def fds_3_and_4():  # runs in the child, before it execs chromium
            os.dup2(to_child, 3)
            os.dup2(from_child, 4)

        with open(log, "wb") as out:
            self._proc = subprocess.Popen(
                [str(exe), *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={profile}",
                 f"--window-size={WIDTH},{HEIGHT}", "about:blank"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                pass_fds=(3, 4), preexec_fn=fds_3_and_4, start_new_session=True)
        os.close(to_child)
        os.close(from_child)
        self._log, self._buf, self._next_id, self._session = log, b"", 0, None
        self.clicks = 0
        try:
            target = self._send("Target.createTarget", url="about:blank")["targetId"]
            self._session = self._send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            self.send("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT,
                      deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.close()
            raise

    # -- the protocol ---------------------------------------------------------------------------
    def _send(self, method: str, session: str | None = None, **params) -> dict:
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self._to_chrome, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + COMMAND_TIMEOUT_S
        while True:  # events arrive in between; nothing here needs them
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._next_id:
                    if "error" in reply:
                        raise BrowserError(f"{method}: {reply['error'].get('message')}")
                    return reply.get("result", {})
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise BrowserError(f"chromium did not answer {method} within {COMMAND_TIMEOUT_S:g} s")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise BrowserError(f"chromium exited ({method}); its log:\n{self._log.read_text()[-3000:]}")
            self._buf += chunk

    def send(self, method: str, **params) -> dict:
        return self._send(method, self._session, **params)

    # -- what tests use -------------------------------------------------------------------------
    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def reload(self) -> None:
        self.send("Page.reload", ignoreCache=True)

    def js(self, expression: str):
        """The value of a JS expression in the page (promises awaited); raises on a JS error."""
        got = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in got:
            raise BrowserError(f"{expression[:200]}: {got['exceptionDetails'].get('exception', got)}")
        return got["result"].get("value")

    def wait_for(self, expression: str, what: str, timeout_s: float = 60.0, shot: Path | None = None):
        """Poll until the expression is truthy and return its value; on timeout, say `what` was
        awaited, where the page was, and (shot) save a screenshot of it."""
        deadline = time.monotonic() + timeout_s
        probe = f"(() => {{ const v = ({expression}); return v instanceof Node ? true : v; }})()"
        while True:
            value = self.js(probe)
            if value:
                return value
            if time.monotonic() > deadline:
                if shot is not None:
                    self.screenshot(shot)
                raise BrowserError(f"waited {timeout_s:g} s for {what}; the page is at {self.url()}"
                                   + (f" (screenshot: {shot})" if shot else ""))
            time.sleep(POLL_S)

    def url(self) -> str:
        return self.js("location.href")

    def _centre(self, expression: str, what: str, timeout_s: float, *, scroll: bool) -> dict:
        """Where the element the expression finds has its centre ({x, y}), once it has a size;
        `scroll`: brought into view first, as a person scrolls to what they are about to click."""
        into_view = " el.scrollIntoView({block: 'center'});" if scroll else ""
        return self.wait_for(
            f"(() => {{ const el = {expression}; if (!el) return null;{into_view}"
            " const r = el.getBoundingClientRect();"
            " return r.width && r.height ? {x: r.x + r.width / 2, y: r.y + r.height / 2} : null; })()",
            what, timeout_s)

    def click(self, expression: str, what: str, timeout_s: float = 30.0) -> None:
        """Click the element the expression finds, with the mouse at its centre, as a person
        would: an element covered by another one (a pop-over) gets no click."""
        box = self._centre(expression, what, timeout_s, scroll=True)
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"], button="left",
                      clickCount=1)
        self.clicks += 1

    def wheel(self, expression: str, what: str, *, dx: float = 0, dy: float = 0,
              timeout_s: float = 30.0) -> None:
        """Turn the mouse wheel (dx: a trackpad's sideways swipe) over the element's centre: it
        scrolls whatever scrolls under the mouse there, and is no click."""
        box = self._centre(expression, what, timeout_s, scroll=False)
        self.send("Input.dispatchMouseEvent", type="mouseWheel", x=box["x"], y=box["y"],
                  deltaX=dx, deltaY=dy)

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            try:
                self._send("Browser.close")
            except (BrowserError, OSError):
                pass
            stop_process_group(self._proc, self._proc.pid)  # chromium forks a dozen helpers
        finally:
            for fd in (self._to_chrome, self._from_chrome):
                try:
                    os.close(fd)
                except OSError:
                    pass

    def __enter__(self) -> Page:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
