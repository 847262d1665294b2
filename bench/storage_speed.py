"""A stage on a local disk and on an S3 server, same run: wall times, the storage requests
each step makes, and the published outputs compared byte for byte.

    .venv/bin/python bench/storage_speed.py [--stage dedup|tokenize] [--corpus data/sample] [--repeats 3]

Starts the S3 test server (moto, ``moto[server]`` from the dev extra) in its own process
on 127.0.0.1, uploads the corpus once, then alternates, ``--repeats`` times each (a fresh
output each time): a local-disk run; a run with input and output on the server
(``run.work_dir: auto``: on one machine the work folder stays on the local disk); and one
with the work folder on the server too (``run.work_dir=output``, what a cluster with no
shared disk does). Prints the median wall time of each and their ratios to the local run.
One more run of each S3 kind goes through a counting proxy and gives the requests per
step (by HTTP method; ``driver`` is what the driver itself does: listing, fingerprints,
publishing, reports and the manifest). The server shares the job's CPUs (a real store's
work is not on the job's machine), so the CPU seconds it spent during each run are printed
beside the wall times; ``--server-cpu K`` runs it alone on CPU K and the job on the others
(``--num-cpus`` of them), as a store on other machines would be. ``--latency-ms N`` sends
the timed S3 runs through a proxy that holds each request N ms, the round trip of a real
object store (the server's CPU then matters less than how many requests wait in turn).
Every published object is compared with the local run's (the manifest apart from the
locations it names, how it ran and its timings). Only loopback addresses are used.
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

# What a manifest holds beside the outputs' description: the locations it names, how it ran, timings.
UNCOMPARED = {"dedup": ("input", "config.input", "config.output"),
              "tokenize": ("config.input", "config.output", "config.run", "config.storage", "timing",
                           "input_files_reused")}
S3_KINDS = {"s3": [], "s3-work": ["run.work_dir=output"]}  # S3 run kind -> its extra settings
LABELS = {"local": "local disk", "s3": "S3, work folder local", "s3-work": "S3, work folder on S3"}


def published(url: str) -> dict[str, bytes]:
    from common.storage import location

    root = location(url)
    return {f.relative_to(root): f.read_bytes() for f in root.list_files() if not f.relative_to(root).startswith("_work/")}


def comparable(manifest: bytes, stage: str) -> dict:
    data = json.loads(manifest)
    for key in UNCOMPARED[stage]:
        node, *rest = data, *key.split(".")
        for part in rest[:-1]:
            node = node[part]
        node.pop(rest[-1])
    return data


def start_server(cpus: set[int] | None = None) -> tuple[subprocess.Popen, S3Server]:
    """moto's server in a process of its own (so it competes with the job for no lock),
    on ``cpus`` only when given."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    os.environ.update(S3_ENV)
    return server, S3Server(endpoint)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def stage_runner(stage: str):
    """``run(cfg)`` of the stage and a config loader taking the input, output and overrides."""
    from common.config import load_config

    if stage == "dedup":
        from pipeline.dedup import DedupStageConfig as config_class
        from pipeline.dedup import run
        config = REPO / "configs/data/slimpajama.yaml"
    else:
        from pipeline.tokenize import TokenizeConfig as config_class
        from pipeline.tokenize import run
        config = REPO / "configs/data/tokenize.yaml"

    def job(inp: str, out: str, *extra: str) -> float:
        cfg = load_config(config_class, config, [f"input={inp}", f"output={out}", "run.progress=false", *extra])
        start = time.perf_counter()
        run(cfg)
        return time.perf_counter() - start

    return job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--stage", choices=sorted(UNCOMPARED), default="dedup")
    parser.add_argument("--corpus", default="data/sample")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="/tmp/storage_speed")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--latency-ms", type=float, default=0, help="hold each timed S3 request this long")
    parser.add_argument("--server-cpu", type=int, help="run the server on this CPU and the job on the others "
                        "(as a store elsewhere would; --num-cpus then counts the job's)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    from common.storage import CACHE_ENV, location
    from pipeline.kernel import init_ray

    shutil.rmtree(args.out, ignore_errors=True)
    os.environ[CACHE_ENV] = str(Path(args.out) / "cache")  # the local work folders of the S3 runs
    if args.server_cpu is not None:  # the job (and the Ray workers it starts) off the server's CPU
        os.sched_setaffinity(0, os.sched_getaffinity(0) - {args.server_cpu})
    server, s3 = start_server({args.server_cpu} if args.server_cpu is not None else None)
    proxy = S3Proxy(s3.endpoint).start()
    os.environ["AWS_ENDPOINT_URL"] = s3.endpoint  # before Ray starts: its workers inherit it
    init_ray(args.num_cpus)
    bucket = s3.create_bucket(f"storage-{args.stage}")
    corpus = Path(args.corpus)
    for path in sorted(corpus.rglob("*")):
        if path.is_file():
            (location(bucket) / "corpus" / path.relative_to(corpus).as_posix()).upload_from(path)
    per_step = requests_per_step(proxy)
    slowed, latency = [], None  # the timed S3 runs' endpoint: the server, or a proxy holding each request
    if args.latency_ms:
        latency = S3Proxy(s3.endpoint, latency_s=args.latency_ms / 1000).start()
        slowed = [f"storage.endpoint_url={latency.endpoint}"]
    job = stage_runner(args.stage)

    walls: dict[str, list[float]] = {"local": [], **{kind: [] for kind in S3_KINDS}}
    server_cpu: dict[str, list[float]] = {kind: [] for kind in S3_KINDS}  # seconds of the server's CPU in each run
    local_out = Path(args.out) / "local"
    for i in range(args.repeats):
        shutil.rmtree(local_out, ignore_errors=True)
        walls["local"].append(job(str(corpus), str(local_out)))
        for kind, extra in S3_KINDS.items():
            before = cpu_seconds(server.pid)
            walls[kind].append(job(f"{bucket}/corpus", f"{bucket}/{kind}-{i}", *slowed, *extra))
            server_cpu[kind].append(cpu_seconds(server.pid) - before)
        print(f"run {i + 1}: " + ", ".join(f"{k} {w[-1]:.1f} s" for k, w in walls.items()), file=sys.stderr)
    requests: dict[str, dict[str, dict[str, int]]] = {}
    for kind, extra in S3_KINDS.items():
        per_step.clear()
        proxy.reset_counts()
        job(f"{bucket}/corpus", f"{bucket}/{kind}-counted", f"storage.endpoint_url={proxy.endpoint}", *extra)
        per_step.setdefault("driver", Counter()).update(proxy.reset_counts())  # publishing, reports, manifest
        requests[kind] = {step: dict(sorted(c.items())) for step, c in per_step.items()}

    local_files = {p.relative_to(local_out).as_posix(): p.read_bytes() for p in sorted(local_out.rglob("*"))
                   if p.is_file() and "_work" not in p.relative_to(local_out).parts}
    same = True
    for name in (f"{kind}-{suffix}" for kind in S3_KINDS for suffix in (args.repeats - 1, "counted")):
        remote_files = published(f"{bucket}/{name}")
        same = same and sorted(local_files) == sorted(remote_files) and all(
            remote_files[k] == v for k, v in local_files.items() if k != "manifest.json")
        same = same and (comparable(remote_files["manifest.json"], args.stage)
                         == comparable(local_files["manifest.json"], args.stage))
    medians = {kind: statistics.median(w) for kind, w in walls.items()}
    size = sum(p.stat().st_size for p in corpus.rglob("*") if p.is_file())
    held = f", each S3 request held {args.latency_ms:g} ms" if args.latency_ms else ""
    held += f", the server alone on CPU {args.server_cpu}" if args.server_cpu is not None else ""
    print(f"\n{args.stage}, corpus {corpus} ({size / 1e6:.1f} MB of files), {args.num_cpus} CPUs, median of "
          f"{args.repeats}{held}; outputs identical: {same} ({len(local_files)} files)")
    for kind, w in walls.items():
        ratio = "" if kind == "local" else f"  {medians[kind] / medians['local']:5.2f} x local"
        cpu = "" if kind == "local" else f"   server CPU {statistics.median(server_cpu[kind]):.1f} s"
        print(f"{LABELS[kind]:22s} {medians[kind]:6.1f} s{ratio}   {[round(x, 1) for x in w]}{cpu}")
    for kind, steps in requests.items():
        total = sum(sum(c.values()) for c in steps.values())
        print(f"\nrequests per step, {LABELS[kind]} (one run through the counting proxy, {total:,} in all):")
        for step, counts in steps.items():
            print(f"  {step:18s} {sum(counts.values()):6,}  " + "  ".join(f"{m} {n:,}" for m, n in counts.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"stage": args.stage, "wall_s": walls, "identical": same,
                                               "ratio": {k: medians[k] / medians["local"] for k in S3_KINDS},
                                               "server_cpu_s": server_cpu,
                                               "requests": requests}, indent=1) + "\n")
    proxy.stop()
    if latency:
        latency.stop()
    server.terminate()
    server.wait()
    if not same:
        sys.exit("outputs differ between the local disk and the S3 server")


if __name__ == "__main__":
    main()
