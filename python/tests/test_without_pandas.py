"""The API where pandas (and tqdm) are not installed: plain dicts, text progress."""

from __future__ import annotations

import builtins
import sys

import pytest

import sluice


@pytest.fixture
def no_pandas(monkeypatch):
    """Makes `import pandas` (and pyarrow, tqdm) fail, as on a bare install."""
    real_import = builtins.__import__
    hidden = ("pandas", "pyarrow", "tqdm")

    def guarded(name, *args, **kwargs):
        if name.split(".")[0] in hidden:
            raise ImportError(f"No module named {name!r} (hidden by the test)")
        return real_import(name, *args, **kwargs)

    for module in list(sys.modules):
        if module.split(".")[0] in hidden:
            monkeypatch.delitem(sys.modules, module)
    monkeypatch.setattr(builtins, "__import__", guarded)


def test_results_are_plain_dicts_with_the_same_columns(no_pandas, mock, store):
    bodies = [{"model": "m", "messages": [{"role": "user", "content": f"q{i}"}], "metadata": {"row": i, "tag": "t"}} for i in range(3)]
    results = sluice.run(bodies, url=mock.url("/v1"), store=store, progress=False)
    rows = sluice.read_results(results)
    assert isinstance(rows, list) and isinstance(rows[0], dict)
    assert list(rows[0]) == [
        "custom_id", "status", "status_code", "attempts", "latency_ms", "prompt_tokens",
        "completion_tokens", "content", "error", "item.row", "item.tag",
    ]
    assert [r["item.row"] for r in rows] == [0, 1, 2]
    assert all(r["content"].startswith("mock reply") for r in rows)
    assert sluice.read_results(results.run, store=store) == rows


def test_embeddings_are_lists_of_floats(no_pandas, mock, store):
    results = sluice.run([{"model": "e", "input": "vector me"}], url=mock.url("/v1"), store=store, progress=False)
    (row,) = sluice.read_results(results)
    assert isinstance(row["embedding"], list) and len(row["embedding"]) == 8
    assert all(isinstance(x, float) for x in row["embedding"])
    assert "content" not in row


def test_progress_without_tqdm_is_a_line_of_text(no_pandas, mock, store, capsys):
    sluice.run(["a", "b", "c"], url=mock.url("/v1"), model="m", store=store, progress=True)
    err = capsys.readouterr().err
    assert "sluice: 3/3 items" in err, err


def test_csv_files_read_without_pandas(no_pandas, mock, store, tmp_path):
    results = sluice.run(["a"], url=mock.url("/v1"), model="m", store=store, progress=False)
    path = sluice.export(results, "csv", path=tmp_path / "r.csv", include_item=True)
    (row,) = sluice.read_results(path)
    assert row["status"] == "done"
    with pytest.raises(ImportError, match="pandas and pyarrow"):
        sluice.read_results(sluice.export(results, "parquet", path=tmp_path / "r.parquet"))
    nested = sluice.export(results, path=tmp_path / "r.jsonl")
    with pytest.raises(ValueError, match="nested"):
        sluice.read_results(nested)
