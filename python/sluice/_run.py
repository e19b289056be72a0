"""``sluice.run`` and ``sluice.iter_run``: a batch through the binary, its
results in input order or as they are recorded."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

from ._process import EventProcess, call, store_args
from ._progress import Progress
from ._requests import prepare
from .errors import InvalidInputError

PathLike = Union[str, "os.PathLike[str]"]


class Results(List[Dict[str, Any]]):
    """A run's results in input order (a list of dicts: Batch API output
    lines for requests, unit results for job files), with the run they
    came from.

    Attributes:
        run: the run's id in the store (``requests-1``).
        summary: sluice's summary of the run (``sluice run --json``).
        store: the store the run is in (``None``: sluice's default).
    """

    def __init__(self, items: Sequence[Dict[str, Any]], run: str, summary: Dict[str, Any], store: Optional[PathLike]) -> None:
        super().__init__(items)
        self.run = run
        self.summary = summary
        self.store = store

    @property
    def failed(self) -> List[Dict[str, Any]]:
        """The results of items that failed (each says why in ``error``)."""
        return [r for r in self if r.get("error") is not None]

    def to_pandas(self) -> Any:
        """The results as a flat DataFrame (see :func:`sluice.read_results`)."""
        from ._results import read_results

        return read_results(self)

    def __repr__(self) -> str:
        return f"<sluice.Results run={self.run!r}: {len(self)} items, {len(self.failed)} failed>"


def _args(
    requests: Any,
    *,
    url: Optional[str],
    model: Optional[str],
    rpm: Optional[int],
    tpm: Optional[int],
    concurrency: Optional[int],
    store: Optional[PathLike],
    api_key_env: Optional[str],
    name: Optional[str],
    fresh: bool,
    out: Optional[PathLike],
    retries: Optional[int],
    timeout: Optional[str],
    sets: Optional[Mapping[str, Any]],
    prompt_column: str,
    params: Optional[Mapping[str, Any]],
    extra_args: Sequence[str],
    progress_interval: float,
):
    source = prepare(requests, model=model, prompt_column=prompt_column, params=params, name=name, store=store)
    args = ["run", source.arg, "--events", "--include-item", "--progress-interval", str(progress_interval)]
    if source.job:
        quick_only = {"url": url, "rpm": rpm, "tpm": tpm, "api_key_env": api_key_env, "model": model}
        given = [k for k, v in quick_only.items() if v is not None]
        if given:
            raise InvalidInputError(
                f"{', '.join(given)} apply to requests, not to a job file; set them in the job "
                "(or sets={'providers.NAME.rpm': 600})",
                2,
            )
        if concurrency is not None:
            args += ["--set", f"concurrency={concurrency}"]
    else:
        for flag, value in (("--url", url), ("--rpm", rpm), ("--tpm", tpm), ("--concurrency", concurrency), ("--api-key-env", api_key_env)):
            if value is not None:
                args += [flag, str(value)]
    for key, value in (sets or {}).items():
        text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        args += ["--set", f"{key}={text}"]
    if name is not None:
        args += ["--name", name]
    if fresh:
        args.append("--fresh")
    if out is not None:
        args += ["--out", os.fspath(out)]
    if retries is not None:
        args += ["--retries", str(retries)]
    if timeout is not None:
        args += ["--timeout", timeout]
    args += store_args(store)
    args += list(extra_args)
    return args, source.data


def _identity(result: Dict[str, Any]) -> Any:
    return result.get("id")


def _stream(
    args: List[str],
    data: Optional[bytes],
    progress: bool,
    store: Optional[PathLike],
    state: Dict[str, Any],
    earlier: bool = True,
) -> Iterator[Dict[str, Any]]:
    """Yields each result as it is recorded, then (``earlier``) those
    recorded by earlier runs of the same input (a resume), in input order."""
    bar = Progress(progress)
    process = EventProcess(args, data)
    seen = set()
    try:
        for event in process.events():
            kind = event.get("event")
            if kind == "start":
                state["run"] = event["run"]
                bar.start(int(event.get("total") or 0))
            elif kind == "progress":
                bar.update(event)
            elif kind == "result":
                bar.result()
                seen.add(_identity(event["result"]))
                yield event["result"]
            elif kind == "end":
                state["summary"] = event
    finally:
        bar.close(state.get("summary"))
    if not earlier:
        return
    for result in export_lines(state["run"], store=store):
        if _identity(result) not in seen:
            yield result


def export_lines(run: str, *, store: Optional[PathLike] = None) -> List[Dict[str, Any]]:
    """Every recorded result of ``run``, in input order, with item fields."""
    raw = call(["export", run, "--include-item", *store_args(store)])
    return [json.loads(line) for line in raw.splitlines() if line.strip()]


def run(
    requests: Any,
    *,
    url: Optional[str] = None,
    model: Optional[str] = None,
    rpm: Optional[int] = None,
    tpm: Optional[int] = None,
    concurrency: Optional[int] = None,
    store: Optional[PathLike] = None,
    api_key_env: Optional[str] = None,
    name: Optional[str] = None,
    fresh: bool = False,
    out: Optional[PathLike] = None,
    retries: Optional[int] = None,
    timeout: Optional[str] = None,
    sets: Optional[Mapping[str, Any]] = None,
    prompt_column: str = "prompt",
    params: Optional[Mapping[str, Any]] = None,
    progress: bool = True,
    extra_args: Sequence[str] = (),
) -> Results:
    """Runs a batch with sluice and returns every result in input order.

    Args:
        requests: a path to a JSONL file of requests or a ``.toml`` job file;
            a pandas DataFrame (one chat request per row from its
            ``prompt_column``, or its ``messages`` or ``input`` column; every
            column comes back as ``item.COLUMN``; an ``id`` column names the
            items); or an iterable of request bodies / Batch API lines (dicts)
            or of prompts (strings, with ``model``).
        url: the endpoint, or a base URL such as ``http://127.0.0.1:8080/v1``
            (each body then goes to /chat/completions, /embeddings or
            /completions by its shape). Default: ``$OPENAI_BASE_URL``, else
            the OpenAI API.
        model: the model of requests built from prompts or rows.
        rpm: requests per minute at most.
        tpm: tokens per minute at most.
        concurrency: calls in progress at most.
        store: the store (a SQLite file or ``postgres://`` URL); default
            ``.sluice/sluice.db`` or ``$SLUICE_STORE``.
        api_key_env: the environment variable with the API key (default:
            ``OPENAI_API_KEY`` when set).
        name: the run's name; also what a rerun with changed requests
            resumes under.
        fresh: start a new run instead of resuming.
        out: also write the results to this file (.jsonl, .csv, .parquet).
        retries: retries of a retryable failure (default 5).
        timeout: one attempt's time-out, e.g. ``"30s"``.
        sets: job file overrides, ``{"matrix.model": ["a", "b"]}``.
        prompt_column: the DataFrame column holding the prompt.
        params: fields added to every request built here
            (``{"max_tokens": 100, "temperature": 0}``).
        progress: show a progress bar (tqdm when installed).
        extra_args: more ``sluice run`` flags, as they are.

    Returns:
        The results, one per input item, in input order; failed items are
        there too, with their ``error``.

    Raises:
        InvalidInputError: bad requests, job or flags (exit code 2); nothing was sent.
        RunInterrupted: the run was stopped (exit code 130); call again to resume.
        SluiceError: any other failure of sluice.
    """
    store_path = store
    args, data = _args(
        requests, url=url, model=model, rpm=rpm, tpm=tpm, concurrency=concurrency, store=store,
        api_key_env=api_key_env, name=name, fresh=fresh, out=out, retries=retries, timeout=timeout,
        sets=sets, prompt_column=prompt_column, params=params, extra_args=extra_args, progress_interval=0.5,
    )
    state: Dict[str, Any] = {}
    for _ in _stream(args, data, progress, store_path, state, earlier=False):
        pass
    results = export_lines(state["run"], store=store_path)
    return Results(results, state["run"], state.get("summary", {}), store_path)


def iter_run(
    requests: Any,
    *,
    url: Optional[str] = None,
    model: Optional[str] = None,
    rpm: Optional[int] = None,
    tpm: Optional[int] = None,
    concurrency: Optional[int] = None,
    store: Optional[PathLike] = None,
    api_key_env: Optional[str] = None,
    name: Optional[str] = None,
    fresh: bool = False,
    out: Optional[PathLike] = None,
    retries: Optional[int] = None,
    timeout: Optional[str] = None,
    sets: Optional[Mapping[str, Any]] = None,
    prompt_column: str = "prompt",
    params: Optional[Mapping[str, Any]] = None,
    progress: bool = False,
    extra_args: Sequence[str] = (),
) -> Iterator[Dict[str, Any]]:
    """Like :func:`run`, but yields each result as soon as it is recorded
    (in completion order), then the results an earlier run of the same input
    had already recorded. Every item is yielded once.

    Leaving the loop early stops the run as Ctrl-C would: what was recorded
    is kept, and the same call later resumes.
    """
    args, data = _args(
        requests, url=url, model=model, rpm=rpm, tpm=tpm, concurrency=concurrency, store=store,
        api_key_env=api_key_env, name=name, fresh=fresh, out=out, retries=retries, timeout=timeout,
        sets=sets, prompt_column=prompt_column, params=params, extra_args=extra_args, progress_interval=0.5,
    )
    yield from _stream(args, data, progress, store, {})


def _run_id(run: Any) -> str:
    if isinstance(run, Results):
        return run.run
    if isinstance(run, str):
        return run
    raise TypeError(f"a run is its id (str) or the Results of sluice.run, not {type(run).__name__}")


def _store_of(run: Any, store: Optional[PathLike]) -> Optional[PathLike]:
    if store is None and isinstance(run, Results):
        return run.store
    return store


def status(run: Any = None, *, store: Optional[PathLike] = None) -> Dict[str, Any]:
    """Progress, counts, rates and errors of a run (default: the latest):
    ``sluice status RUN --json``."""
    args = ["status"] + ([_run_id(run)] if run is not None else []) + ["--json"]
    return json.loads(call(args + store_args(_store_of(run, store))))


def runs(*, store: Optional[PathLike] = None) -> List[Dict[str, Any]]:
    """Every run in the store with its counts: ``sluice runs --json``."""
    return json.loads(call(["runs", "--json", *store_args(store)]))


def export(
    run: Any,
    format: str = "jsonl",
    *,
    path: Optional[PathLike] = None,
    include_item: bool = False,
    flat: bool = False,
    store: Optional[PathLike] = None,
) -> Union[str, bytes, "os.PathLike[str]"]:
    """A run's results in input order: ``sluice export``.

    Args:
        run: the run's id, or the Results of :func:`run`.
        format: ``"jsonl"``, ``"csv"`` or ``"parquet"``.
        path: write there (atomically) and return the path; else return the
            data (text for JSONL and CSV, bytes for Parquet).
        include_item: carry the items' own fields.
        flat: JSONL as flat objects with the CSV/Parquet columns.
        store: the store (default: the Results' store, else sluice's).
    """
    from pathlib import Path

    args = ["export", _run_id(run), "--format", format]
    if include_item:
        args.append("--include-item")
    if flat:
        args.append("--flat")
    args += store_args(_store_of(run, store))
    if path is not None:
        call(args + ["--out", os.fspath(path)])
        return Path(path)
    data = call(args)
    return data if format == "parquet" else data.decode("utf-8")
