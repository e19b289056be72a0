"""Progress of a run in a terminal or a notebook: tqdm when installed
(``tqdm.auto`` picks the notebook widget in Jupyter), else one line of text
on stderr."""

from __future__ import annotations

import sys
import time
from typing import Any, Dict, Optional


class Progress:
    """Shows items finished out of the total, from sluice's events."""

    def __init__(self, enabled: bool, label: str = "sluice") -> None:
        self.enabled = enabled
        self.label = label
        self._bar: Any = None
        self._plain_total: Optional[int] = None
        self._last_draw = 0.0
        self._count = 0

    def start(self, total: int) -> None:
        """The run is open with ``total`` items."""
        if not self.enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            self._plain_total = total
            self._draw(force=True)
            return
        self._bar = tqdm(total=total, desc=self.label, unit="item")

    def update(self, counts: Dict[str, Any]) -> None:
        """A ``progress`` event: counts of the whole run so far."""
        finished = int(counts.get("skipped", 0)) + int(counts.get("done", 0)) + int(counts.get("failed", 0))
        self._set(finished, counts)

    def result(self) -> None:
        """One more item recorded."""
        self._set(self._count + 1, None)

    def _set(self, finished: int, counts: Optional[Dict[str, Any]]) -> None:
        self._count = max(self._count, finished)
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._count - self._bar.n)
            if counts is not None and counts.get("failed"):
                self._bar.set_postfix(failed=counts["failed"], refresh=False)
        else:
            self._draw()

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < 0.2:
            return
        self._last_draw = now
        total = self._plain_total or 0
        line = f"{self.label}: {self._count}/{total} items"
        if sys.stderr.isatty():
            sys.stderr.write("\r" + line)
        elif force or self._count == total:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def close(self, summary: Optional[Dict[str, Any]] = None) -> None:
        """The run ended."""
        if not self.enabled:
            return
        if summary is not None:
            recorded = summary.get("recorded", {})
            self._count = max(self._count, int(recorded.get("done", 0)) + int(recorded.get("failed", 0)))
        if self._bar is not None:
            self._bar.update(self._count - self._bar.n)
            self._bar.close()
        elif self._plain_total is not None:
            self._draw(force=True)
            if sys.stderr.isatty():
                sys.stderr.write("\n")
