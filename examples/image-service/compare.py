#!/usr/bin/env python3
"""Submits the example's images to `sluice serve` twice — streamed
(`wait=stream`: one server-sent event per image as it finishes) and all at
once (`wait=all`: one answer at the end) — and compares the two modes' wall
times: time to the first result, and to all of them. Standard library only.

    compare.py [--server http://127.0.0.1:9501] [--job job.toml] [--images images] [--json]
"""

import argparse
import glob
import json
import os
import sys
import time
import urllib.parse
import uuid
from http.client import HTTPConnection

HERE = os.path.dirname(os.path.abspath(__file__))


def form(job_path, images):
    """A multipart/form-data body: the job as the part "job", each image a part."""
    boundary = "sluice-" + uuid.uuid4().hex
    parts = []

    def part(name, filename, kind, data):
        head = (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: {kind}\r\n\r\n"
        )
        parts.extend([head.encode(), data, b"\r\n"])

    with open(job_path, "rb") as f:
        part("job", "job.toml", "application/toml", f.read())
    for path in images:
        with open(path, "rb") as f:
            part("image", os.path.basename(path), "image/png", f.read())
    parts.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(parts)


def post(server, wait, content_type, body):
    url = urllib.parse.urlsplit(server)
    conn = HTTPConnection(url.hostname, url.port or 80, timeout=300)
    headers = {"Content-Type": content_type}
    if os.environ.get("SLUICE_TOKEN"):
        headers["Authorization"] = "Bearer " + os.environ["SLUICE_TOKEN"]
    conn.request("POST", f"/v1/runs?wait={wait}", body=body, headers=headers)
    response = conn.getresponse()
    if response.status != 200:
        sys.exit(f"POST /v1/runs?wait={wait}: {response.status} {response.read().decode()}")
    return response


def events(response):
    """Server-sent events as (name, data) pairs, as they arrive."""
    name, data = None, []
    for raw in response:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line and name:
            yield name, json.loads("\n".join(data)) if data else None
            name, data = None, []


def streamed(server, content_type, body):
    start = time.monotonic()
    response = post(server, "stream", content_type, body)
    run, first, arrivals, results, summary = None, None, [], {}, None
    for name, data in events(response):
        now = time.monotonic() - start
        if name == "run":
            run = data["id"]
        elif name == "item":
            first = now if first is None else first
            arrivals.append((now, data["id"], data["status"]))
            results[data["id"]] = data
        elif name == "summary":
            summary = data
            break
    total = time.monotonic() - start
    return {"run": run, "first_s": first, "total_s": total, "arrivals": arrivals,
            "results": results, "summary": summary}


def waited(server, content_type, body):
    start = time.monotonic()
    response = post(server, "all", content_type, body)
    answer = json.loads(response.read())
    total = time.monotonic() - start
    results = {r["id"]: r for r in answer["results"]}
    return {"run": answer["run"]["id"], "first_s": total, "total_s": total,
            "order": [r["id"] for r in answer["results"]], "results": results,
            "summary": answer["run"]}


def answer_of(result):
    """What the image model answered for one image (the part that must match)."""
    step = result.get("steps", {}).get("describe", {})
    return result["status"], step.get("json")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", default="http://127.0.0.1:9501")
    p.add_argument("--job", default=os.path.join(HERE, "job.toml"))
    p.add_argument("--images", default=os.path.join(HERE, "images"))
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args()
    images = sorted(glob.glob(os.path.join(args.images, "*.png")))
    if not images:
        sys.exit(f"no *.png in {args.images}; run make_images.py")
    content_type, body = form(args.job, images)

    stream = streamed(args.server, content_type, body)
    every = waited(args.server, content_type, body)
    same = {k: answer_of(v) for k, v in stream["results"].items()} == {
        k: answer_of(v) for k, v in every["results"].items()
    }
    names = [os.path.splitext(os.path.basename(i))[0] for i in images]
    complete = sorted(stream["results"]) == names and sorted(every["results"]) == names
    ok = same and complete and all(s == "done" for _, _, s in stream["arrivals"])

    if args.json:
        print(json.dumps({
            "images": len(images), "bytes": len(body), "same_results": same,
            "complete": complete,
            "stream": {k: stream[k] for k in ("run", "first_s", "total_s", "arrivals")},
            "all": {k: every[k] for k in ("run", "first_s", "total_s", "order")},
        }))
        return 0 if ok else 1

    size = sum(os.path.getsize(i) for i in images)
    print(f"{len(images)} images ({size:,} bytes; the request {len(body):,} bytes) to {args.server}")
    print(f"\nwait=stream  run {stream['run']}: one event per image, in the order they finished")
    for at, image, status in stream["arrivals"]:
        model = stream["results"][image]["steps"].get("describe", {}).get("json") or {}
        file = model.get("file", {})
        print(f"  {at:6.2f} s  {image}  {status}  {model.get('id', '?')}  "
              f"({file.get('type', '?')}, {file.get('bytes', '?')} bytes)")
    print(f"\nwait=all     run {every['run']}: one answer, input order")
    print(f"\n{'':12} {'first result':>14} {'all results':>13}")
    for label, r in (("wait=stream", stream), ("wait=all", every)):
        print(f"{label:12} {r['first_s']:12.2f} s {r['total_s']:11.2f} s")
    print(f"\nsame results both ways: {'yes' if same else 'NO'} "
          f"({len(every['results'])} images, every one {'done' if ok else 'NOT done'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
