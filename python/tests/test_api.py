"""The Python API against a real `sluice mock`: every function, with pandas."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import sluice

pd = pytest.importorskip("pandas")


def test_the_binary_is_the_one_the_wheel_put_beside_the_package(monkeypatch, tmp_path):
    found = Path(sluice.binary())
    assert found.parent == Path(sysconfig.get_path("scripts")), found
    assert subprocess.run([str(found), "--version"], capture_output=True, text=True).stdout.startswith("sluice ")
    monkeypatch.setenv(sluice.BINARY_ENV, str(found))
    assert sluice.binary() == str(found)
    monkeypatch.setenv(sluice.BINARY_ENV, str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="SLUICE_BINARY"):
        sluice.binary()


def test_a_dataframe_of_prompts_gives_a_dataframe_of_answers(mock, store):
    df = pd.DataFrame(
        {
            "id": ["q1", "q2", "q3"],
            "prompt": ["Name a river.", "Name a mountain.", "Name a lake."],
            "topic": ["water", "land", "water"],
            "n": [1, 2, 3],
        }
    )
    results = sluice.run(df, url=mock.url("/v1"), model="m", store=store, progress=False)
    assert [r["custom_id"] for r in results] == ["q1", "q2", "q3"]
    assert all(r["error"] is None for r in results)
    assert results.run.endswith("-1"), results.run
    answers = sluice.read_results(results)
    assert isinstance(answers, pd.DataFrame)
    assert list(answers["custom_id"]) == ["q1", "q2", "q3"]
    assert list(answers["item.topic"]) == ["water", "land", "water"]
    assert answers["item.n"].dtype.kind == "i"
    assert answers["content"].str.startswith("mock reply").all()
    assert (answers["completion_tokens"] > 0).all()
    assert list(answers.columns[:7]) == [
        "custom_id", "status", "status_code", "attempts", "latency_ms", "prompt_tokens", "completion_tokens",
    ]
    assert results.to_pandas().equals(answers)


def test_results_come_in_input_order_and_a_rerun_resumes(mock, store):
    prompts = [f"question {i}" for i in range(30)]
    first = sluice.run(prompts, url=mock.url("/v1"), model="m", store=store, concurrency=8, progress=False)
    assert [r["custom_id"] for r in first] == [f"line-{i}" for i in range(1, 31)]
    sent = mock.stats()["requests"]
    assert sent == 30
    again = sluice.run(prompts, url=mock.url("/v1"), model="m", store=store, progress=False)
    assert again.run == first.run, "the same data is the same run"
    assert again.summary["this_run"]["skipped"] == 30
    assert mock.stats()["requests"] == sent, "nothing sent twice"
    assert [r["response"]["body"] for r in again] == [r["response"]["body"] for r in first]


def test_iter_run_yields_each_item_once_as_recorded_then_the_earlier_ones(mock, store):
    bodies = [{"model": "m", "messages": [{"role": "user", "content": f"q{i}"}], "custom_id": f"c{i}"} for i in range(12)]
    first = [r["custom_id"] for r in sluice.iter_run(bodies[:5], url=mock.url("/v1"), store=store, name="grow")]
    assert sorted(first) == sorted(f"c{i}" for i in range(5))
    # Same name, more requests: the five done ones come back from the store.
    seen = [r["custom_id"] for r in sluice.iter_run(bodies, url=mock.url("/v1"), store=store, name="grow")]
    assert sorted(seen) == sorted(f"c{i}" for i in range(12))
    assert len(seen) == len(set(seen))
    assert mock.stats()["requests"] == 12


def test_status_runs_and_export_in_every_format(mock, store, tmp_path):
    pa = pytest.importorskip("pyarrow.parquet")
    rows = [{"model": "e", "input": f"text {i}", "custom_id": f"e{i}", "metadata": {"i": i}} for i in range(4)]
    results = sluice.run(rows, url=mock.url("/v1"), store=store, progress=False)
    state = sluice.status(results)
    assert state["run"]["id"] == results.run
    assert state["counts"]["done"] == 4
    assert [r["run"]["id"] for r in sluice.runs(store=store)] == [results.run]

    jsonl = sluice.export(results)
    lines = [json.loads(l) for l in jsonl.splitlines()]
    assert [l["custom_id"] for l in lines] == ["e0", "e1", "e2", "e3"]
    csv_text = sluice.export(results, "csv")
    assert csv_text.splitlines()[0].startswith("custom_id,status,")
    assert ",embedding," in csv_text.splitlines()[0]

    # Parquet read back with pyarrow equals the JSONL export.
    path = sluice.export(results, "parquet", path=tmp_path / "e.parquet", include_item=True)
    table = pa.read_table(path)
    assert str(table.schema.field("embedding").type) in ("list<element: float not null>", "list<element: float>")
    assert table.schema.field("item.i").type == "int64"
    data = table.to_pylist()
    for row, line in zip(data, lines):
        assert row["custom_id"] == line["custom_id"]
        vector = line["response"]["body"]["data"][0]["embedding"]
        assert row["embedding"] == pytest.approx(vector, rel=1e-6)
        assert row["item.i"] == line["metadata"]["i"]
        assert row["status"] == "done" and row["error"] is None
    in_memory = sluice.export(results, "parquet")
    assert isinstance(in_memory, bytes) and in_memory[:4] == b"PAR1"
    frame = sluice.read_results(path)
    assert list(frame["custom_id"]) == ["e0", "e1", "e2", "e3"]
    assert len(frame["embedding"][0]) == 8


def test_failures_are_results_and_errors_are_typed(start_mock, store):
    refusing = start_mock("--reject-rate", "1.0")
    results = sluice.run(["a", "b"], url=refusing.url("/v1"), model="m", store=store, progress=False)
    assert len(results.failed) == 2
    assert all(r["error"]["code"] for r in results)
    with pytest.raises(sluice.InvalidInputError) as bad:
        sluice.run([{"model": "m", "question": "?"}], url=refusing.url("/v1"), store=store, progress=False)
    assert bad.value.exit_code == 2
    assert "base URL" in bad.value.message and ":1:" in bad.value.message
    with pytest.raises(sluice.InvalidInputError) as closed:
        sluice.run(["a"], url="http://127.0.0.1:9/v1", model="m", store=store, progress=False)
    assert "cannot reach" in closed.value.message
    with pytest.raises(sluice.SluiceError) as missing:
        sluice.status("no-such-run", store=store)
    assert missing.value.exit_code == 2 and "no run" in missing.value.message
    with pytest.raises(ValueError, match="need model"):
        sluice.run(["a"], url=refusing.url("/v1"), store=store)


def test_job_files_run_with_their_item_fields_and_step_columns(mock, store, tmp_path):
    (tmp_path / "docs.jsonl").write_text(
        "\n".join(json.dumps({"id": f"d{i}", "title": f"Title {i}", "year": 2000 + i}) for i in range(3)) + "\n"
    )
    job = tmp_path / "job.toml"
    job.write_text(
        f"""
[input]
path = "docs.jsonl"

[providers.local]
base_url = "{mock.url('/v1')}"

[[steps]]
name = "vec"
kind = "embed"
provider = "local"
model = "e"
input = "{{{{ item.title }}}}"

[[steps]]
name = "ask"
kind = "chat"
provider = "local"
model = "m"
messages = [{{ role = "user", content = "Summarise {{{{ item.title }}}}" }}]
"""
    )
    results = sluice.run(job, store=store, progress=False, concurrency=2)
    assert [r["id"] for r in results] == ["d0", "d1", "d2"]
    assert results[1]["item"] == {"id": "d1", "title": "Title 1", "year": 2001}
    frame = sluice.read_results(results)
    for column in ["item.title", "item.year", "vec.embedding", "ask.text", "ask.completion_tokens", "ask.latency_ms"]:
        assert column in frame.columns, column
    assert list(frame["item.year"]) == [2000, 2001, 2002]
    assert frame["ask.text"].str.startswith("mock reply").all()
    with pytest.raises(sluice.InvalidInputError, match="job file"):
        sluice.run(job, rpm=10, store=store)


def test_progress_shows_in_a_bar(mock, store, capsys):
    pytest.importorskip("tqdm")
    sluice.run([f"p{i}" for i in range(5)], url=mock.url("/v1"), model="m", store=store, progress=True)
    err = capsys.readouterr().err
    assert "5/5" in err, err


def test_openai_variables_are_used_when_nothing_else_is_given(start_mock, store, monkeypatch, capfd):
    keyed = start_mock("--api-key-env", "MOCK_KEY", env={"MOCK_KEY": "sk-never-shown"})
    monkeypatch.setenv("OPENAI_BASE_URL", keyed.url("/v1"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-shown")
    results = sluice.run(["hi"], model="m", store=store, progress=False)
    assert results[0]["error"] is None, "the key from OPENAI_API_KEY reached the mock"
    err = capfd.readouterr().err
    assert "from $OPENAI_BASE_URL" in err and "key from $OPENAI_API_KEY" in err, err
    assert "sk-never-shown" not in err


def test_leaving_iter_run_early_stops_the_run_and_a_rerun_finishes_it(start_mock, store):
    slow = start_mock("--latency-ms", "200")
    prompts = [f"p{i}" for i in range(40)]
    stream = sluice.iter_run(prompts, url=slow.url("/v1"), model="m", store=store, concurrency=2, name="early")
    first = next(stream)
    assert first["error"] is None
    stream.close()  # what leaving a for loop does
    state = sluice.status("early-1", store=store)
    assert state["run"]["state"] == "interrupted", state["run"]
    done_before = state["counts"]["done"]
    assert 1 <= done_before < 40
    rest = sluice.run(prompts, url=slow.url("/v1"), model="m", store=store, name="early", concurrency=20, progress=False)
    assert rest.run == "early-1"
    assert rest.summary["this_run"]["skipped"] == done_before
    assert len(rest) == 40 and not rest.failed
