"""Open a page in headless Chromium and look at it the way a person would.

Talks to Chromium over the DevTools protocol through ``--remote-debugging-pipe`` (file
descriptors 3 and 4, messages separated by NUL bytes), which needs no network port and no
websocket library. Collects console errors, uncaught exceptions and failed loads, measures
elements, and takes PNG screenshots that :func:`decode_png` turns into pixels.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import struct
import subprocess
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
]


def find_chromium() -> str | None:
    """``$KORCH_CHROMIUM``, else ``chromium`` on PATH (Debian's package), else None."""
    return os.environ.get("KORCH_CHROMIUM") or shutil.which("chromium")


@dataclass
class Page:
    """What the browser saw: console errors and failed loads, plus a live session."""

    errors: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


class Browser:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self, executable: str, width: int = 1280, height: int = 1000) -> None:
        self.profile = tempfile.mkdtemp(prefix="korch-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # move the child's ends above 3 and 4, so that dup2 onto 3 and 4 below always copies
        # (a copy clears close-on-exec; dup2 of a descriptor onto itself would not)
        to_child_r, from_child_w = (_above(fd, 10) for fd in (to_child_r, from_child_w))

        def wire() -> None:  # runs in the child: DevTools reads fd 3, writes fd 4
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        self.proc = subprocess.Popen(
            [
                executable,
                *FLAGS,
                f"--user-data-dir={self.profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # dup2 onto fixed descriptors must happen in the child; Python's own descriptors
            # are close-on-exec, so close_fds=False leaks nothing but fds 3 and 4
            preexec_fn=wire,
            close_fds=False,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        self.page = Page()
        self.session: str | None = None

    def __enter__(self) -> Browser:
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)[
            "sessionId"
        ]
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.call(f"{domain}.enable", session=True)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):  # the browser may be gone already
            self.call("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child)
        os.close(self._from_child)
        shutil.rmtree(self.profile, ignore_errors=True)

    # -------------------------------------------------------------- protocol

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise RuntimeError(
                    f"Chromium closed the DevTools pipe (exit status {self.proc.poll()})"
                )
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def _note(self, message: dict[str, Any]) -> None:
        method = message.get("method", "")
        params = message.get("params", {})
        self.page.events.append(message)
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(
                str(a.get("value", a.get("description", ""))) for a in params.get("args", [])
            )
            self.page.errors.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            self.page.errors.append("exception: " + params["exceptionDetails"].get("text", ""))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            entry = params["entry"]
            self.page.errors.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())
        elif method == "Network.loadingFailed":
            self.page.errors.append(f"load failed: {params.get('errorText')}")

    def call(
        self, method: str, *, session: bool = False, timeout: float = 30, **params: Any
    ) -> dict[str, Any]:
        """Send a command and wait for its answer, noting every event seen meanwhile."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self._note(answer)

    def wait_for(self, event: str, timeout: float = 30) -> dict[str, Any]:
        """Wait for the next event named ``event``, noting the others."""
        deadline = time.monotonic() + timeout
        for seen in self.page.events:
            if seen.get("method") == event:
                return seen
        while True:
            message = self._read_message(deadline)
            self._note(message)
            if message.get("method") == event:
                return message

    # -------------------------------------------------------------- page

    def open(self, url: str) -> Page:
        """Load ``url`` and wait until it has loaded."""
        self.page = Page()
        self.call("Page.navigate", session=True, url=url)
        self.wait_for("Page.loadEventFired")
        return self.page

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable results)."""
        result = self.call(
            "Runtime.evaluate", session=True, expression=expression, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"evaluate: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, clip: dict[str, float] | None = None) -> bytes:
        """A PNG of ``clip`` (page coordinates) or of the whole page."""
        if clip is None:
            size = self.call("Page.getLayoutMetrics", session=True)["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"]}
        shot = self.call(
            "Page.captureScreenshot",
            session=True,
            format="png",
            clip={**clip, "scale": 1},
            captureBeyondViewport=True,
        )
        return base64.b64decode(shot["data"])


def _above(fd: int, minimum: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, minimum)
    os.close(fd)
    return moved


def decode_png(data: bytes) -> np.ndarray:
    """An 8-bit RGB or RGBA, non-interlaced PNG as an array (height, width, 3) of uint8."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, width, height, colour = 8, [], 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or interlace or colour not in (2, 6):
                raise ValueError(
                    f"unsupported PNG (depth {depth}, colour type {colour}, interlace {interlace})"
                )
        elif kind == b"IDAT":
            idat.append(body)
    bpp = 3 if colour == 2 else 4
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8).reshape(
        height, 1 + width * bpp
    )
    out = np.zeros((height, width * bpp), dtype=np.uint8)
    previous = np.zeros(width * bpp, dtype=np.int64)
    for y in range(height):
        kind, line = raw[y, 0], raw[y, 1:].astype(np.int64)
        if kind == 0:
            current = line
        elif kind == 1:  # Sub: a running sum per channel
            current = (np.cumsum(line.reshape(width, bpp), axis=0) % 256).reshape(-1)
        elif kind == 2:  # Up
            current = (line + previous) % 256
        else:  # Average and Paeth depend on the pixel just decoded: byte by byte
            cur = [0] * line.size
            above = previous.tolist()
            for i, v in enumerate(line.tolist()):
                a = cur[i - bpp] if i >= bpp else 0
                b = above[i]
                c = above[i - bpp] if i >= bpp else 0
                if kind == 3:
                    cur[i] = (v + (a + b) // 2) & 255
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    cur[i] = (v + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            current = np.array(cur, dtype=np.int64)
        out[y] = current
        previous = current
    return out.reshape(height, width, bpp)[:, :, :3]


def tinted(
    pixels: np.ndarray, hex_colour: str, strength: float = 0.3, tolerance: float = 25
) -> int:
    """How many pixels are ``#rrggbb`` laid over white at an opacity of at least ``strength``
    (anti-aliased edges and translucent dots count, other colours do not)."""
    colour = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.float64)
    ink = 255.0 - colour
    d = 255.0 - pixels.astype(np.float64)
    t = d @ ink / float(ink @ ink)
    residual = np.abs(d - t[..., None] * ink).max(axis=2)
    return int(((t >= strength) & (t <= 1.1) & (residual <= tolerance)).sum())
