"""Turning what ``sluice.run`` is given into sluice's input: a file path, or
JSONL lines fed on stdin (spooled by sluice under its store, named by their
content, so the same data run again resumes)."""

from __future__ import annotations

import datetime
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Union

Request = Mapping[str, Any]


@dataclass
class Input:
    """sluice's input argument and, for ``-``, the bytes to feed it."""

    arg: str
    data: Optional[bytes]
    job: bool


def _json_safe(value: Any) -> Any:
    """A DataFrame cell as JSON: NaN/NA become null, numpy scalars plain numbers."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, (list, dict, str, bytes)):
        try:
            value = value.item()  # numpy scalar
        except (ValueError, TypeError):
            pass
    if isinstance(value, float) and math.isnan(value):
        return None
    try:
        import pandas as pd  # noqa: F401

        if value is pd.NA or value is pd.NaT:
            return None
        if isinstance(value, pd.Timestamp):
            return value.isoformat()
    except ImportError:
        pass
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _is_frame(value: Any) -> bool:
    return type(value).__name__ == "DataFrame" and hasattr(value, "to_dict")


def _body_from_row(
    row: Dict[str, Any],
    model: Optional[str],
    prompt_column: str,
    params: Mapping[str, Any],
) -> Dict[str, Any]:
    """A request body from a row: ``messages``, else ``prompt_column`` as a
    user message, else ``input`` (embeddings)."""
    body: Dict[str, Any] = {}
    if row.get("messages") is not None:
        body["messages"] = row["messages"]
    elif row.get(prompt_column) is not None:
        body["messages"] = [{"role": "user", "content": str(row[prompt_column])}]
    elif row.get("input") is not None:
        body["input"] = row["input"]
    else:
        raise ValueError(
            f"row {row!r} has no {prompt_column!r}, 'messages' or 'input' column to build a request from; "
            "name the prompt column with prompt_column=..."
        )
    if row.get("model") is not None:
        body["model"] = row["model"]
    elif model is not None:
        body["model"] = model
    body.update(params)
    return body


def from_frame(frame: Any, model: Optional[str], prompt_column: str, params: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """One request line per row of a pandas DataFrame; every column also goes
    into ``metadata``, so the results carry the row back (``item.COLUMN``).
    An ``id`` or ``custom_id`` column names the items."""
    lines = []
    for record in frame.to_dict(orient="records"):
        row = {str(k): _json_safe(v) for k, v in record.items()}
        line = _body_from_row(row, model, prompt_column, params)
        ident = row.get("custom_id", row.get("id"))
        if ident is not None:
            line["custom_id"] = str(ident)
        line["metadata"] = row
        lines.append(line)
    return lines


def from_items(items: Iterable[Union[str, Request]], model: Optional[str], params: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """Request lines from prompts (strings: chat requests to ``model``) or
    dicts (bare request bodies or Batch API lines, sent as they are; a bare
    body without ``model`` gets ``model``)."""
    lines = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            if model is None:
                raise ValueError("prompts given as strings need model=... to build chat requests")
            lines.append({"model": model, "messages": [{"role": "user", "content": item}], **params})
        elif isinstance(item, Mapping):
            line = dict(item)
            if "body" not in line:
                if model is not None and "model" not in line:
                    line["model"] = model
                line.update({k: v for k, v in params.items() if k not in line})
            lines.append(line)
        else:
            raise TypeError(f"request {i} is a {type(item).__name__}; give dicts (request bodies) or strings (prompts)")
    return lines


_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def spool_dir(store: Optional[Union[str, "os.PathLike[str]"]]) -> Path:
    """Where sluice keeps its inputs for ``store``: ``inputs/`` beside a
    SQLite store (``.sluice/inputs`` for the default or a PostgreSQL one)."""
    location = os.fspath(store) if store is not None else os.environ.get("SLUICE_STORE", ".sluice/sluice.db")
    if location.startswith(("postgres://", "postgresql://")):
        return Path(".sluice") / "inputs"
    return Path(location).parent / "inputs"


def _write_named(lines: str, name: str, store: Any) -> str:
    """Writes the requests of the run called ``name`` to a file of that name:
    the same name is then the same input, and a changed list resumes (sluice
    sends only what is new or changed)."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"name {name!r} must be 1-64 of A-Z a-z 0-9 . _ -")
    folder = spool_dir(store)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"python-{name}.jsonl"
    partial = folder / f".python-{name}.jsonl.{os.getpid()}.partial"
    partial.write_text(lines, encoding="utf-8")
    os.replace(partial, path)
    return str(path)


def prepare(
    requests: Any,
    model: Optional[str] = None,
    prompt_column: str = "prompt",
    params: Optional[Mapping[str, Any]] = None,
    name: Optional[str] = None,
    store: Any = None,
) -> Input:
    """sluice's input for ``requests``: a job file, a JSONL file, a DataFrame,
    or an iterable of dicts or prompt strings.

    Requests held in memory go to sluice on stdin (it keeps them under the
    store, named by their content: the same data again resumes its run) or,
    with a ``name``, to a file of that name (the same name resumes, even
    with some requests changed or added)."""
    params = dict(params or {})
    if isinstance(requests, (str, os.PathLike)):
        path = os.fspath(requests)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such file (give a .jsonl of requests or a .toml job)")
        return Input(arg=path, data=None, job=path.endswith(".toml"))
    if _is_frame(requests):
        lines = from_frame(requests, model, prompt_column, params)
    elif isinstance(requests, Mapping):
        raise TypeError("give a list of requests, not one request (wrap it in a list)")
    else:
        lines = from_items(requests, model, params)
    if not lines:
        raise ValueError("no requests to run")
    data = "".join(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n" for line in lines)
    if name is not None:
        return Input(arg=_write_named(data, name, store), data=None, job=False)
    return Input(arg="-", data=data.encode("utf-8"), job=False)
