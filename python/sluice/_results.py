"""``sluice.read_results``: a run's results as one flat row per item — a
pandas DataFrame when pandas is installed, else a list of dicts."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from ._process import call, store_args

Rows = List[Dict[str, Any]]


def _frame(rows: Rows, columns: Optional[List[str]] = None) -> Any:
    """A DataFrame of ``rows`` when pandas is importable, else ``rows``."""
    try:
        import pandas as pd
    except ImportError:
        return rows
    if columns is None:
        columns = []
        for row in rows:
            columns.extend(k for k in row if k not in columns)
    return pd.DataFrame.from_records(rows, columns=columns)


def read_results(path_or_run: Any, *, store: Optional[Union[str, "os.PathLike[str]"]] = None) -> Any:
    """One flat row per item: the columns of ``sluice export --format csv``
    with types kept (``sluice export --flat --include-item``).

    For requests: ``custom_id, status, status_code, attempts, latency_ms,
    prompt_tokens, completion_tokens``, ``content`` (the answer's text) and/or
    ``embedding`` (a list of floats), ``error``, and each metadata field as
    ``item.FIELD``. For job files: ``id, item_id, status, error,
    started_at, finished_at, duration_ms``, ``matrix.AXIS``, ``item.FIELD``,
    and per step ``STEP.text``, ``STEP.json`` (JSON text), ``STEP.file``,
    ``STEP.status``, ``STEP.prompt_tokens``, ``STEP.completion_tokens``,
    ``STEP.latency_ms``, ``STEP.started_at``, ``STEP.finished_at``,
    ``STEP.duration_ms`` (an embed step: ``STEP.embedding``).

    Args:
        path_or_run: the Results of :func:`sluice.run`, a run id, or a file
            sluice wrote: ``.parquet``, ``.csv``, or a ``.jsonl`` from
            ``sluice export --flat``.
        store: where the run is (default: the Results' store, else sluice's).

    Returns:
        A ``pandas.DataFrame`` if pandas is installed, else a list of dicts.
    """
    from ._run import Results

    if isinstance(path_or_run, Results):
        return _from_run(path_or_run.run, store if store is not None else path_or_run.store)
    if isinstance(path_or_run, (str, os.PathLike)) and Path(path_or_run).is_file():
        return _from_file(Path(path_or_run))
    if isinstance(path_or_run, str):
        return _from_run(path_or_run, store)
    raise TypeError(f"give the Results of sluice.run, a run id or a results file, not {type(path_or_run).__name__}")


def _from_run(run: str, store: Any) -> Any:
    raw = call(["export", run, "--flat", "--include-item", *store_args(store)])
    lines = [line for line in raw.decode("utf-8").splitlines() if line.strip()]
    if not lines:
        return _frame([], [])
    # Every row has every column, in the export's order.
    columns = list(json.loads(lines[0]).keys())
    return _frame([json.loads(line) for line in lines], columns)


def _from_file(path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError(f"{path}: reading Parquet needs pandas and pyarrow (pip install pandas pyarrow)") from e
        return pd.read_parquet(path)
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = [dict(r) for r in reader]
            return _frame(rows, list(reader.fieldnames or []))
    if suffix in (".jsonl", ".ndjson"):
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        nested = [r for r in rows if isinstance(r.get("response"), dict) or isinstance(r.get("steps"), dict)]
        if nested:
            raise ValueError(
                f"{path} holds nested result lines; pass the run instead (sluice.read_results('RUN-ID')), "
                "or write the file with `sluice export RUN --flat --include-item`, --format csv or parquet"
            )
        return _frame(rows)
    raise ValueError(f"{path}: read_results reads .parquet, .csv and flat .jsonl files")
