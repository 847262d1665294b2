"""Incremental dedup against one joint run, on a real corpus split into two dumps.

The corpus's files are split by ``--new`` (glob patterns of ``<source>/<file>``) into
an earlier dump and a new one; the earlier dump's folders are named ``a-<source>``
and the new one's ``b-<source>``, so in one joint run over both (keep =
smallest_id) every earlier document ranks first, as incremental dedup ranks it. Runs
the earlier dump, the new dump with ``reference=`` the earlier output, and the joint
run, then compares: new documents the joint run removes that the incremental run
keeps (misses), the reverse, earlier documents the joint run removes (the bridging
case: a new document joining two earlier clusters), the bridging count the report
gives, and the reference index's size per document.

    python bench/dedup_incremental.py --corpus data/sample --new 'code/chunk-0000[23]*' --out /tmp/dedup-incremental
    python bench/dedup_incremental.py --corpus data/sample --every 3 --out /tmp/dedup-incremental-3
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import zstandard

REPO = Path(__file__).resolve().parents[1]


def split(corpus: Path, patterns: list[str], every: int, out: Path) -> None:
    """Files matching ``patterns`` go to the new dump; with ``every`` > 0, instead every
    ``every``-th document of each file does (duplicates that sit together are split)."""
    shutil.rmtree(out / "dumps", ignore_errors=True)
    for path in sorted(corpus.glob("*/*.jsonl.zst")):
        rel = f"{path.parent.name}/{path.name}"
        if every:
            lines = zstandard.ZstdDecompressor().decompressobj().decompress(path.read_bytes()).splitlines(keepends=True)
            parts = {"a": [x for k, x in enumerate(lines) if k % every], "b": [x for k, x in enumerate(lines) if not k % every]}
        else:
            parts = {"b" if any(fnmatch.fnmatch(rel, p) for p in patterns) else "a": None}
        for dump, body in parts.items():
            for root in (out / "dumps" / dump, out / "dumps" / "joint"):
                target = root / f"{dump}-{path.parent.name}" / path.name
                target.parent.mkdir(parents=True, exist_ok=True)
                if body is None:
                    target.symlink_to(path.resolve())
                else:
                    target.write_bytes(zstandard.ZstdCompressor().compress(b"".join(body)))


def dedup(repo: Path, inp: Path, output: Path, num_cpus: int, *extra: str) -> None:
    shutil.rmtree(output, ignore_errors=True)
    cmd = [sys.executable, "-m", "pipeline.dedup", f"input={inp}", f"output={output}", "run.progress=false",
           f"run.num_cpus={num_cpus}", "run.keep_work=false", *extra]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"dedup of {inp} failed:\n{proc.stderr[-3000:]}")


def ledger(out: Path) -> dict[str, dict]:
    return {r["id"]: r for r in pq.read_table(out / "ledger.parquet", columns=["id", "status", "kept_id"]).to_pylist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="data/sample")
    parser.add_argument("--new", nargs="+", default=["code/chunk-0000[23]*"])
    parser.add_argument("--every", type=int, default=0, help="every N-th document of each file is new (instead of --new)")
    parser.add_argument("--out", default="/tmp/dedup-incremental")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--reuse-joint", action="store_true", help="keep an earlier joint run's output")
    parser.add_argument("--repo", default=str(REPO), help="the checkout whose pipeline runs (compare versions)")
    args = parser.parse_args()
    out = Path(args.out)
    split(Path(args.corpus), args.new, args.every, out)
    repo = Path(args.repo).resolve()
    dedup(repo, out / "dumps" / "a", out / "earlier", args.num_cpus)
    dedup(repo, out / "dumps" / "b", out / "incremental", args.num_cpus, f"reference={out / 'earlier'}")
    if not (args.reuse_joint and (out / "joint" / "manifest.json").exists()):
        dedup(repo, out / "dumps" / "joint", out / "joint", args.num_cpus)
    old, inc, joint = ledger(out / "earlier"), ledger(out / "incremental"), ledger(out / "joint")
    new_ids = [i for i in joint if i.startswith("b-")]
    removed = lambda table, i: table[i]["status"] == "duplicate"  # noqa: E731
    report = json.loads((out / "incremental" / "report.json").read_text())
    index = out / "earlier" / "index"
    manifest = json.loads((index / "manifest.json").read_text())
    size = sum(p.stat().st_size for p in index.rglob("*") if p.is_file())
    result = {
        "new_documents": len(new_ids),
        "joint_removes": sum(removed(joint, i) for i in new_ids),
        "incremental_removes": sum(removed(inc, i) for i in new_ids),
        "missed": sum(removed(joint, i) and not removed(inc, i) for i in new_ids),
        "extra": sum(removed(inc, i) and not removed(joint, i) for i in new_ids),
        "other_kept_id": sum(removed(inc, i) and removed(joint, i) and inc[i]["kept_id"] != joint[i]["kept_id"] for i in new_ids),
        "earlier_removed_by_joint_only": sum(old[i]["status"] == "kept" and removed(joint, i) for i in old),
        "bridged_reported": (report.get("incremental") or {}).get("bridged_reference_documents"),
        "index_documents": manifest["documents"],
        "index_bytes_per_doc": round(size / max(manifest["documents"], 1), 1),
    }
    print(json.dumps(result, indent=1))
    (out / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
