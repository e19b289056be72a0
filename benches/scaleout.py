#!/usr/bin/env python3
"""Scale-out benchmarks (issue 7): several sluice processes on one run in
PostgreSQL, against `sluice mock` on 127.0.0.1.

    cargo build --release && python3 benches/scaleout.py [--quick] [--only NAME ...]

Scenarios:
  commits   PostgreSQL's commit rate here (pgbench, one-row insert per
            transaction, 1 and 3 clients): the bound on how often the
            workers can record
  rpm       3 workers on one job under a provider rpm R, the mock enforcing
            R: max requests in any 60 s window <= R, 0 x 429, rate >= 95% of R
  scaling   no limits, zero latency: calls/s of 3 workers vs 1 (target >= 2x),
            with the commits/s the run made (pg_stat_database)
  kill      kill -9 one of 3 workers mid-run: every unit exactly once in
            the results; requests the mock saw twice (the victim's in flight)

Each run is queued with `sluice run JOB --queue-only`, then worked by
`sluice worker --exit-when-idle` processes only; times run from the first
worker's start to the last one's exit.

The store is a fresh schema in SLUICE_BENCH_POSTGRES (default
postgres://postgres@127.0.0.1:5432/test), dropped afterwards. Only 127.0.0.1
is contacted; every scenario stops by itself.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "sluice")
BASE = os.environ.get("SLUICE_BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432/test")


class Mock:
    def __init__(self, *args):
        self.proc = subprocess.Popen([BIN, "mock", "--port", "0", *args],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        self.port = int(line.rsplit(":", 1)[1])

    def url(self, path="/v1/chat/completions"):
        return f"http://127.0.0.1:{self.port}{path}"

    def stats(self):
        with urllib.request.urlopen(self.url("/_mock/stats")) as r:
            return json.load(r)

    def close(self):
        self.proc.terminate()
        self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def psql(sql):
    out = subprocess.run(["psql", "-qAt", BASE, "-c", sql], check=True,
                         capture_output=True, text=True)
    return out.stdout.strip()


class Schema:
    def __init__(self, name):
        self.name = f"sluice_bench_{name}_{os.getpid()}"
        psql(f"DROP SCHEMA IF EXISTS {self.name} CASCADE; CREATE SCHEMA {self.name}")
        sep = "&" if "?" in BASE else "?"
        self.url = f"{BASE}{sep}options=-csearch_path%3D{self.name}"

    def drop(self):
        psql(f"DROP SCHEMA IF EXISTS {self.name} CASCADE")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.drop()


def write_job(tmp, mock, n, limits, concurrency=None):
    with open(os.path.join(tmp, "items.jsonl"), "w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"q{i:06}", "q": f"question {i} " + "x" * 40}) + "\n")
    top = f"concurrency = {concurrency}\n" if concurrency else ""
    path = os.path.join(tmp, "job.toml")
    with open(path, "w") as f:
        f.write(f"""name = "bench"
{top}
[input]
path = "items.jsonl"
[providers.mock]
base_url = "{mock.url('/v1')}"
{limits}
[[steps]]
name = "ask"
kind = "chat"
provider = "mock"
model = "m"
params = {{ max_tokens = 16 }}
messages = [{{ role = "user", content = "{{{{ item.q }}}}" }}]
""")
    return path


def start(tmp, url, *args):
    env = dict(os.environ, SLUICE_STORE=url, SLUICE_PROGRESS_INTERVAL="0")
    return subprocess.Popen([BIN, *args], cwd=tmp, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def status(tmp, url):
    env = dict(os.environ, SLUICE_STORE=url)
    out = subprocess.run([BIN, "status", "--json"], cwd=tmp, env=env,
                         capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else None


def run_shared(tmp, url, job, processes, lease="10s", on_running=None):
    """Queues the job's run, then `processes` x `sluice worker`; returns the
    seconds from the first worker's start until the last one exited."""
    env = dict(os.environ, SLUICE_STORE=url)
    subprocess.run([BIN, "run", job, "--queue-only"], cwd=tmp, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    t0 = time.monotonic()
    workers = [start(tmp, url, "worker", "--exit-when-idle", "--lease", lease)
               for _ in range(processes)]
    if on_running:
        on_running(workers)
    for p in workers:
        p.wait()
        if p.returncode not in (0, -9):
            print(p.stderr.read().decode(), file=sys.stderr)
            raise SystemExit(f"a worker failed ({p.returncode})")
    wall = time.monotonic() - t0
    subprocess.run([BIN, "export", "bench", "--out", "out.jsonl"], cwd=tmp, env=env, check=True)
    return wall


def exported(tmp):
    with open(os.path.join(tmp, "out.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return rows


def sustained(stats):
    span = (stats["last_ok_unix_ms"] - stats["first_ok_unix_ms"]) / 1000
    return stats["ok"] / span if span > 0 else 0.0


def commits(quick):
    seconds = 5 if quick else 10
    psql("DROP TABLE IF EXISTS sluice_bench_commit; CREATE TABLE sluice_bench_commit (v int)")
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write("INSERT INTO sluice_bench_commit VALUES (1);\n")
        script = f.name
    rates = {}
    for clients in (1, 3):
        out = subprocess.run(["pgbench", "-n", "-c", str(clients), "-T", str(seconds),
                              "-f", script, BASE], capture_output=True, text=True, check=True)
        line = [x for x in out.stdout.splitlines() if x.startswith("tps")][0]
        rates[clients] = float(line.split("=")[1].split()[0])
    psql("DROP TABLE sluice_bench_commit")
    os.unlink(script)
    print(f"commits   pgbench, one-row insert per transaction, {seconds} s: "
          f"1 client {rates[1]:,.0f}/s · 3 clients {rates[3]:,.0f}/s")
    return {"name": "commits", "ok": True, "rates": rates}


def cpu_ticks():
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def wal_lsn():
    return psql("SELECT pg_current_wal_lsn()")


def wal_bytes(since):
    return int(float(psql(f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{since}')")))


def xact_commits():
    return int(psql("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"))


def rpm(quick):
    # 1,200/min is one request per 50 ms; the mock allows a request up to
    # 25 ms early, more than the scheduling jitter of a loaded 2-core machine.
    r, n = (1200, 300) if quick else (1200, 1260)
    with Mock("--rpm", str(r)) as mock, Schema("rpm") as schema, \
            tempfile.TemporaryDirectory() as tmp:
        job = write_job(tmp, mock, n, f"concurrency = 16\nrpm = {r}")
        wall = run_shared(tmp, schema.url, job, 3)
        rows = exported(tmp)
        stats = mock.stats()
    rate = sustained(stats) * 60
    ok = (stats["max_requests_per_minute"] <= r and stats["rate_limited"] == 0
          and rate >= 0.95 * r and len(rows) == n)
    print(f"rpm       3 workers, {n:,} units, rpm {r:,} (mock enforcing it): "
          f"max {stats['max_requests_per_minute']:,} in any 60 s · {stats['rate_limited']} x 429 · "
          f"{rate:,.0f}/min = {rate / r:.3f} of R · wall {wall:.1f} s (bound {n / r * 60:.1f} s) "
          f"{'pass' if ok else 'FAIL'}")
    return {"name": "rpm", "ok": ok}


def scaling(quick):
    n = 6000 if quick else 20000
    results = {}
    for processes in (1, 3):
        with Mock() as mock, Schema(f"scale{processes}") as schema, \
                tempfile.TemporaryDirectory() as tmp:
            job = write_job(tmp, mock, n, "", concurrency=64)
            before = xact_commits()
            lsn = wal_lsn()
            busy0, total0 = cpu_ticks()
            wall = run_shared(tmp, schema.url, job, processes)
            busy1, total1 = cpu_ticks()
            made = xact_commits() - before
            wal = wal_bytes(lsn)
            cpu = (busy1 - busy0) / max(total1 - total0, 1)
            rows = exported(tmp)
            stats = mock.stats()
        results[processes] = (sustained(stats), wall, made, len(rows), cpu, wal)
    one, three = results[1][0], results[3][0]
    ok = three >= 2 * one and results[1][3] == n and results[3][3] == n
    for p, (rate, wall, made, _, cpu, wal) in results.items():
        print(f"scaling   {p} worker{'s' if p > 1 else ''}, {n:,} units, zero latency: "
              f"{rate:,.0f} calls/s sustained · wall {wall:.2f} s · {made / wall:,.0f} commits/s · "
              f"WAL {wal / n:,.0f} B/unit, {wal / wall / 1e6:.1f} MB/s · "
              f"machine CPU {cpu:.0%} busy ({os.cpu_count()} cores)")
    print(f"scaling   3 vs 1: {three / one:.2f}x (target >= 2x) {'pass' if ok else 'FAIL'}")
    return {"name": "scaling", "ok": ok}


def kill(quick):
    n = 1500 if quick else 3000
    killed = {}
    with Mock("--latency-ms", "20") as mock, Schema("kill") as schema, \
            tempfile.TemporaryDirectory() as tmp:
        job = write_job(tmp, mock, n, "concurrency = 16")

        def victim(workers):
            while mock.stats()["ok"] < n // 3:
                time.sleep(0.05)
            killed["at"] = mock.stats()["ok"]
            os.kill(workers[0].pid, signal.SIGKILL)

        wall = run_shared(tmp, schema.url, job, 3, lease="3s", on_running=victim)
        rows = exported(tmp)
        stats = mock.stats()
    ids = {r["id"] for r in rows}
    ok = len(rows) == n and len(ids) == n and all(r["status"] == "done" for r in rows)
    print(f"kill      3 workers, {n:,} units, kill -9 one after {killed['at']:,} answers: "
          f"{len(rows):,} results, {len(ids):,} distinct · {stats['duplicate_requests']} requests "
          f"sent twice (the victim's in flight) · wall {wall:.1f} s "
          f"{'pass' if ok else 'FAIL'}")
    return {"name": "kill", "ok": ok}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    scenarios = {"commits": commits, "rpm": rpm, "scaling": scaling, "kill": kill}
    rows = []
    for name, f in scenarios.items():
        if args.only and name not in args.only:
            continue
        try:
            rows.append(f(args.quick))
        except Exception as e:  # one broken scenario must not hide the others
            print(f"{name:<9} FAILED: {e}")
            rows.append({"name": name, "ok": False})
    sys.exit(0 if all(r["ok"] for r in rows) else 1)


if __name__ == "__main__":
    main()
