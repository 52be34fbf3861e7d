"""Progress display: a live rich table on a terminal, plain timestamped lines elsewhere (CI logs)."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table


class PlainProgress:
    """One line per stage change; object counts every 500 objects so logs stay short."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self._last_reported: dict[str, int] = {}

    def _line(self, text: str) -> None:
        print(f"[{time.monotonic() - self.start:7.1f}s] {text}", file=self.stream, flush=True)

    def stage(self, variant: str, name: str) -> None:
        self._line(f"{variant}: {name}")

    def objects(self, variant: str, count: int) -> None:
        if count - self._last_reported.get(variant, 0) >= 500:
            self._last_reported[variant] = count
            self._line(f"{variant}: {count} objects compiled")

    def note(self, message: str) -> None:
        self._line(message)

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


class RichProgress:
    """A live table: variant, stage, elapsed in stage, objects compiled."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.rows: dict[str, list] = {}  # variant -> [stage, started, objects]
        self.start = time.monotonic()
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=False)
        self.live.get_renderable = self._render  # type: ignore[method-assign]

    def _render(self) -> Table:
        table = Table(box=None, pad_edge=False)
        table.add_column("variant", style="bold")
        table.add_column("stage")
        table.add_column("elapsed", justify="right")
        table.add_column("objects", justify="right")
        now = time.monotonic()
        for variant, (stage, started, objects) in self.rows.items():
            table.add_row(variant, stage, f"{now - started:6.1f}s", str(objects) if objects else "")
        table.caption = f"total {now - self.start:.1f}s"
        return table

    def stage(self, variant: str, name: str) -> None:
        objects = self.rows.get(variant, [None, 0, 0])[2]
        self.rows[variant] = [name, time.monotonic(), objects]

    def objects(self, variant: str, count: int) -> None:
        if variant in self.rows:
            self.rows[variant][2] = count

    def note(self, message: str) -> None:
        self.console.log(message)

    def __enter__(self) -> RichProgress:
        self.live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.live.__exit__(exc_type, exc, tb)


def progress_for(console: Console) -> RichProgress | PlainProgress:
    return RichProgress(console) if console.is_terminal else PlainProgress()
