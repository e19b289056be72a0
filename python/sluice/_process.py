"""Running the ``sluice`` binary: one-shot commands, and runs streamed as events."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from typing import IO, Any, Dict, Iterator, List, Optional, Sequence

from ._binary import binary
from .errors import SluiceError, from_exit


def store_args(store: Optional[os.PathLike | str]) -> List[str]:
    """``--store STORE`` when a store is given (else sluice's default or $SLUICE_STORE)."""
    return ["--store", os.fspath(store)] if store is not None else []


def call(args: Sequence[str]) -> bytes:
    """Runs ``sluice ARGS`` to its end and returns its stdout.

    Raises:
        SluiceError: it exited with an error (typed by exit code).
    """
    done = subprocess.run(
        [binary(), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        check=False,
    )
    if done.returncode != 0:
        raise from_exit(done.returncode, done.stderr.decode("utf-8", "replace"))
    return done.stdout


class EventProcess:
    """A ``sluice run ... --events`` process: its events as dicts, in order.

    stdin is fed from a thread (``data``), stderr gathered by another (lines
    starting ``sluice:`` — what the run announces — are echoed to
    ``sys.stderr``), so no pipe can fill up and stall the run.
    """

    def __init__(self, args: Sequence[str], data: Optional[bytes]) -> None:
        self.process = subprocess.Popen(
            [binary(), *args],
            stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._stderr: List[str] = []
        self._threads = [threading.Thread(target=self._gather, daemon=True)]
        if data is not None:
            self._threads.append(threading.Thread(target=self._feed, args=(data,), daemon=True))
        for thread in self._threads:
            thread.start()
        self.end: Optional[Dict[str, Any]] = None

    def _feed(self, data: bytes) -> None:
        stdin: IO[bytes] = self.process.stdin  # type: ignore[assignment]
        try:
            stdin.write(data)
        except BrokenPipeError:
            pass  # sluice stopped reading (it refused the input); its stderr says why
        finally:
            try:
                stdin.close()
            except BrokenPipeError:
                pass

    def _gather(self) -> None:
        stream: IO[bytes] = self.process.stderr  # type: ignore[assignment]
        for raw in stream:
            line = raw.decode("utf-8", "replace")
            self._stderr.append(line)
            if line.startswith("sluice:"):
                sys.stderr.write(line)

    def events(self) -> Iterator[Dict[str, Any]]:
        """Yields each event as it arrives; then waits for the process.

        Raises:
            SluiceError: the process ended with an error (exit code 1
                without an ``end`` event, 2, 130, ...). Exit code 1 after an
                ``end`` event only means some items failed: they are in the
                results.
        """
        stdout: IO[bytes] = self.process.stdout  # type: ignore[assignment]
        finished = False
        try:
            for raw in stdout:
                if not raw.strip():
                    continue
                event = json.loads(raw)
                if event.get("event") == "end":
                    self.end = event
                yield event
            finished = True
        finally:
            if not finished and self.process.poll() is None:
                # The caller stopped early (or failed): stop the run like
                # Ctrl-C would; what was recorded is kept for a resume.
                self.process.terminate()
            code = self.process.wait()
            for thread in self._threads:
                thread.join(timeout=5)
        if code != 0 and not (code == 1 and self.end is not None):
            raise from_exit(code, "".join(self._stderr))

    def stderr(self) -> str:
        """What sluice wrote to stderr so far."""
        return "".join(self._stderr)


__all__ = ["call", "EventProcess", "SluiceError", "store_args"]
