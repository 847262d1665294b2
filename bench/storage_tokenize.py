"""The tokenize stage on a local disk and on an S3 server, same run: wall times, storage
requests per step, and the published outputs compared byte for byte.

    .venv/bin/python bench/storage_tokenize.py [--corpus data/sample] [--repeats 3] [--out /tmp/storage_tokenize]

Starts the S3 test server (moto, from the dev extra) on 127.0.0.1 with a counting proxy in
front, uploads the corpus once, then alternates a local-disk run and a run with input and
output on the server (a fresh output each time), ``--repeats`` times each, and prints the
median wall time of each and their ratio. Every published object of the last runs is
compared (the manifest apart from the locations it names and its timings). Only loopback
addresses are used.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers.s3 import start_s3_server  # noqa: E402  (the bench runs from a checkout)
from tests.helpers.s3_proxy import S3Proxy, requests_per_step  # noqa: E402


def comparable(manifest: bytes) -> dict:
    data = json.loads(manifest)
    for key in ("input", "output", "run"):
        data["config"].pop(key)
    for key in ("timing", "input_files_reused"):
        data.pop(key)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default="data/sample")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="/tmp/storage_tokenize")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    server, s3 = start_s3_server()
    proxy = S3Proxy(s3.endpoint).start()
    os.environ["AWS_ENDPOINT_URL"] = proxy.endpoint  # before Ray starts: its workers count too
    from common.config import load_config
    from common.storage import location
    from pipeline.kernel import init_ray
    from pipeline.tokenize import TokenizeConfig, run

    init_ray(args.num_cpus)
    bucket = s3.create_bucket("storage-tokenize")
    corpus = Path(args.corpus)
    for path in sorted(corpus.rglob("*")):
        if path.is_file():
            (location(bucket) / "corpus" / path.relative_to(corpus).as_posix()).upload_from(path)

    per_step = requests_per_step(proxy)

    def job(inp: str, out: str) -> float:
        cfg = load_config(TokenizeConfig, REPO / "configs/data/tokenize.yaml",
                          [f"input={inp}", f"output={out}", "run.progress=false"])
        start = time.perf_counter()
        run(cfg)
        return time.perf_counter() - start

    walls: dict[str, list[float]] = {"local": [], "s3": []}
    local_out = Path(args.out) / "local"
    for i in range(args.repeats):
        shutil.rmtree(local_out, ignore_errors=True)
        walls["local"].append(job(str(corpus), str(local_out)))
        per_step.clear()
        proxy.reset_counts()
        walls["s3"].append(job(f"{bucket}/corpus", f"{bucket}/out{i}"))
        per_step.setdefault("driver", Counter()).update(proxy.reset_counts())
        print(f"run {i + 1}: local {walls['local'][-1]:.1f} s, s3 {walls['s3'][-1]:.1f} s", file=sys.stderr)

    local_files = {p.relative_to(local_out).as_posix(): p.read_bytes() for p in sorted(local_out.rglob("*")) if p.is_file()}
    root = location(f"{bucket}/out{args.repeats - 1}")
    remote_files = {f.relative_to(root): f.read_bytes() for f in root.list_files()}
    same = sorted(local_files) == sorted(remote_files) and all(
        remote_files[k] == v for k, v in local_files.items() if k != "manifest.json")
    same = same and comparable(remote_files["manifest.json"]) == comparable(local_files["manifest.json"])
    local_s, s3_s = statistics.median(walls["local"]), statistics.median(walls["s3"])
    requests = {step: dict(sorted(c.items())) for step, c in per_step.items()}
    size = sum(p.stat().st_size for p in corpus.rglob("*") if p.is_file())
    print(f"\ncorpus {corpus} ({size / 1e6:.1f} MB), {args.num_cpus} CPUs, median of {args.repeats}")
    print(f"local disk  {local_s:6.1f} s   {[round(w, 1) for w in walls['local']]}")
    print(f"S3 server   {s3_s:6.1f} s   {[round(w, 1) for w in walls['s3']]}")
    print(f"ratio       {s3_s / local_s:6.2f} x   outputs identical: {same} ({len(local_files)} files)")
    print("\nrequests per step (last S3 run):")
    for step, counts in requests.items():
        print(f"  {step:10s} {sum(counts.values()):6,}  " + "  ".join(f"{m} {n:,}" for m, n in counts.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"local_s": walls["local"], "s3_s": walls["s3"], "ratio": s3_s / local_s,
                                               "identical": same, "requests": requests}, indent=1) + "\n")
    proxy.stop()
    server.stop()
    if not same:
        sys.exit("outputs differ between the local disk and the S3 server")


if __name__ == "__main__":
    main()
