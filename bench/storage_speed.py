"""The dedup stage on a local disk and on an S3 server, same run: wall times and the
storage requests each step makes.

    .venv/bin/python bench/storage_speed.py [--corpus data/sample] [--repeats 3] [--out /tmp/storage_speed]

Starts the S3 test server (moto, ``moto[server]`` from the dev extra) in its own process
on 127.0.0.1, uploads the corpus once, then alternates a local-disk run and a run with
input and output on the server (a fresh output each time), ``--repeats`` times each, and
prints the median wall time of each and their ratio. One more S3 run goes through a
counting proxy and gives the requests per step (by HTTP method; ``driver`` is what the
driver itself does: listing, fingerprints, publishing, the ledger, report and manifest).
The published outputs are compared byte for byte (the manifest apart from the locations
it names). Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers.s3 import S3_ENV, S3Server  # noqa: E402  (the bench runs from a checkout)
from tests.helpers.s3_proxy import S3Proxy, requests_per_step  # noqa: E402

PATH_KEYS = ("input", "config.input", "config.output")  # what the manifest says about locations


def published(url: str) -> dict[str, bytes]:
    from common.storage import location

    root = location(url)
    return {f.relative_to(root): f.read_bytes() for f in root.list_files() if not f.relative_to(root).startswith("_work/")}


def comparable(manifest: bytes) -> dict:
    data = json.loads(manifest)
    for key in PATH_KEYS:
        node, *rest = data, *key.split(".")
        for part in rest[:-1]:
            node = node[part]
        node.pop(rest[-1])
    return data


def start_server() -> tuple[subprocess.Popen, S3Server]:
    """moto's server in a process of its own (so it competes with the job for no lock)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    os.environ.update(S3_ENV)
    return server, S3Server(endpoint)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default="data/sample")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="/tmp/storage_speed")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    server, s3 = start_server()
    proxy = S3Proxy(s3.endpoint).start()
    os.environ["AWS_ENDPOINT_URL"] = s3.endpoint  # before Ray starts: its workers inherit it
    from common.config import load_config
    from common.storage import location
    from pipeline.dedup import DedupStageConfig, run
    from pipeline.kernel import init_ray

    init_ray(args.num_cpus)
    bucket = s3.create_bucket("storage-speed")
    corpus = Path(args.corpus)
    for path in sorted(corpus.rglob("*")):
        if path.is_file():
            location(f"{bucket}/corpus/{path.relative_to(corpus).as_posix()}").write_bytes(path.read_bytes())
    per_step = requests_per_step(proxy)

    def job(inp: str, out: str, *extra: str) -> float:
        cfg = load_config(DedupStageConfig, REPO / "configs/data/slimpajama.yaml",
                          [f"input={inp}", f"output={out}", "run.progress=false", *extra])
        start = time.perf_counter()
        run(cfg)
        return time.perf_counter() - start

    walls: dict[str, list[float]] = {"local": [], "s3": []}
    local_out = Path(args.out) / "local"
    for i in range(args.repeats):
        shutil.rmtree(local_out, ignore_errors=True)
        walls["local"].append(job(str(corpus), str(local_out)))
        walls["s3"].append(job(f"{bucket}/corpus", f"{bucket}/out{i}"))
        print(f"run {i + 1}: local {walls['local'][-1]:.1f} s, s3 {walls['s3'][-1]:.1f} s", file=sys.stderr)
    per_step.clear()
    proxy.reset_counts()
    job(f"{bucket}/corpus", f"{bucket}/counted", f"storage.endpoint_url={proxy.endpoint}")  # the workers too
    per_step.setdefault("driver", Counter()).update(proxy.reset_counts())  # publishing, ledger, manifest

    local_files = {p.relative_to(local_out).as_posix(): p.read_bytes() for p in sorted(local_out.rglob("*"))
                   if p.is_file() and "_work" not in p.relative_to(local_out).parts}
    remote_files = published(f"{bucket}/out{args.repeats - 1}")
    same = sorted(local_files) == sorted(remote_files) and all(
        remote_files[k] == v for k, v in local_files.items() if k != "manifest.json")
    same = same and comparable(remote_files["manifest.json"]) == comparable(local_files["manifest.json"])
    local_s, s3_s = statistics.median(walls["local"]), statistics.median(walls["s3"])
    requests = {step: dict(sorted(c.items())) for step, c in per_step.items()}
    total = sum(sum(c.values()) for c in requests.values())
    same = same and published(f"{bucket}/counted") == {**remote_files, "manifest.json": published(f"{bucket}/counted")["manifest.json"]}
    print(f"\ncorpus {corpus} ({sum(len(v) for v in local_files.values()) / 1e6:.1f} MB published), "
          f"{args.num_cpus} CPUs, median of {args.repeats}")
    print(f"local disk  {local_s:6.1f} s   {[round(w, 1) for w in walls['local']]}")
    print(f"S3 server   {s3_s:6.1f} s   {[round(w, 1) for w in walls['s3']]}")
    print(f"ratio       {s3_s / local_s:6.2f} x   outputs identical: {same} ({len(local_files)} files)")
    print(f"\nrequests per step (one S3 run through the counting proxy, {total:,} in all):")
    for step, counts in requests.items():
        print(f"  {step:10s} {sum(counts.values()):6,}  " + "  ".join(f"{m} {n:,}" for m, n in counts.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"local_s": walls["local"], "s3_s": walls["s3"], "ratio": s3_s / local_s,
                                               "identical": same, "requests": requests}, indent=1) + "\n")
    proxy.stop()
    server.terminate()
    server.wait()
    if not same:
        sys.exit("outputs differ between the local disk and the S3 server")


if __name__ == "__main__":
    main()
