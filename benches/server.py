#!/usr/bin/env python3
"""Server overhead: the same 10,000-item job run from the CLI (`sluice run`) and
submitted to `sluice serve` with `?wait=stream` (every item's result streamed back
as a server-sent event, read by curl), both against `sluice mock` on 127.0.0.1.

    cargo build --release && python3 benches/server.py [--quick] [--latency-ms N]

Prints the best of three wall times on each side and their ratio; the target is
a ratio < 1.10 (the server adds less than 10%). The server is started once and
already listening, as a service would be; the CLI side is the whole process.
Only 127.0.0.1 is contacted; everything stops by itself.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from core import BIN, Mock  # noqa: E402

JOB = """
name = "{name}"
concurrency = {conc}
[input]
path = "items.jsonl"
[providers.mock]
base_url = "{url}"
concurrency = {conc}
[[steps]]
name = "ask"
kind = "chat"
provider = "mock"
model = "m"
messages = [{{ role = "user", content = "{{{{ item.q }}}}" }}]
params = {{ max_tokens = 8 }}
"""


def cli(tmp, job):
    with open(f"{tmp}/job.toml", "w") as f:
        f.write(job)
    env = dict(os.environ, SLUICE_PROGRESS_INTERVAL="0")
    start = time.monotonic()
    proc = subprocess.run([BIN, "run", "job.toml", "--fresh", "--store", "cli.db"], cwd=tmp,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(proc.stderr.decode())
    return wall


def served(port, tmp, job, n):
    with open(f"{tmp}/submit.toml", "w") as f:
        f.write(job)
    start = time.monotonic()
    out = subprocess.run(["curl", "-sN", "-X", "POST", "--data-binary", f"@{tmp}/submit.toml",
                          "-H", "content-type: application/toml",
                          f"http://127.0.0.1:{port}/v1/runs?wait=stream"],
                         stdout=subprocess.PIPE, check=True).stdout.decode()
    wall = time.monotonic() - start
    items = out.count("event: item\n")
    if items != n or "event: summary" not in out:
        sys.exit(f"the stream had {items} items of {n}:\n{out[-2000:]}")
    return wall


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2,000 items")
    p.add_argument("--latency-ms", type=int, default=20)
    p.add_argument("--concurrency", type=int, default=100)
    args = p.parse_args()
    n = 2_000 if args.quick else 10_000
    with tempfile.TemporaryDirectory() as tmp:
        with open(f"{tmp}/items.jsonl", "w") as f:
            for i in range(n):
                f.write(f'{{"id": "i{i}", "q": "question {i}"}}\n')
        mock = Mock("--latency-ms", str(args.latency_ms))
        server = subprocess.Popen([BIN, "serve", "--bind", "127.0.0.1:0", "--store", "served.db"],
                                  cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        port = int(server.stdout.readline().strip().rsplit(":", 1)[1])
        job = JOB.format(name="bench", conc=args.concurrency, url=mock.url("/v1"))
        try:
            cli_walls, server_walls = [], []
            for _ in range(3):
                cli_walls.append(cli(tmp, job))
                server_walls.append(served(port, tmp, job, n))
        finally:
            server.terminate()
            server.wait()
            mock.close()
    bound = n * args.latency_ms / 1000 / args.concurrency
    best_cli, best_server = min(cli_walls), min(server_walls)
    ratio = best_server / best_cli
    print(f"{n} items, 1 chat step, mock latency {args.latency_ms} ms, concurrency {args.concurrency} "
          f"(latency bound {bound:.2f} s)")
    print(f"  cli    sluice run job.toml                 best {best_cli:.2f} s  (runs: "
          + ", ".join(f"{w:.2f}" for w in cli_walls) + ")")
    print(f"  server POST /v1/runs?wait=stream + curl   best {best_server:.2f} s  (runs: "
          + ", ".join(f"{w:.2f}" for w in server_walls) + ")")
    print(f"  ratio {ratio:.3f}  target < 1.10  {'pass' if ratio < 1.10 else 'FAIL'}")
    sys.exit(0 if ratio < 1.10 else 1)


if __name__ == "__main__":
    main()
