"""Fixtures: a real `sluice mock` on 127.0.0.1 (a free port), a scratch store."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, Optional

import pytest

import sluice


class Mock:
    """A `sluice mock --port 0` process."""

    def __init__(self, *args: str, env: Optional[Dict[str, str]] = None) -> None:
        self.process = subprocess.Popen(
            [sluice.binary(), "mock", "--port", "0", *args],
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("listening on "), line
        self.address = line.split()[-1]

    def url(self, path: str = "/v1") -> str:
        return f"http://{self.address}{path}"

    def stats(self) -> dict:
        with urllib.request.urlopen(self.url("/_mock/stats"), timeout=10) as r:
            return json.load(r)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def mock() -> Iterator[Mock]:
    m = Mock()
    yield m
    m.stop()


@pytest.fixture
def start_mock():
    started = []

    def start(*args: str, env: Optional[Dict[str, str]] = None) -> Mock:
        m = Mock(*args, env=env)
        started.append(m)
        return m

    yield start
    for m in started:
        m.stop()


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A store of the test's own; the test runs in its own directory and no
    OpenAI variable of the developer's shell leaks in."""
    monkeypatch.chdir(tmp_path)
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "SLUICE_URL", "SLUICE_STORE", "SLUICE_BINARY"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "store" / "sluice.db"
