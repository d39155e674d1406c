"""Benchmark of splatflow.storage and the publish stage: upload/download throughput (multipart, SHA-256 verified)
against a local S3 server over HTTP (moto server mode; a Python server, so these numbers bound our client's
overhead rather than measure S3) and a local folder, and the time to publish the guitar sample.

    python bench/storage.py                  # 8, 64 and 256 MiB objects
    python bench/storage.py --sizes 8 64

Writes bench/results/storage.json and bench/results/storage.md (machine, versions, one row per run).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(Path(__file__).resolve().parent))


def machine() -> dict[str, Any]:
    """The machine description shared by the benchmarks, plus the storage libraries' versions."""
    from importlib.metadata import version

    from sfm import machine as common  # bench/sfm.py: CPU, cores, memory, platform

    info: dict[str, Any] = common()
    info["versions"].update({p: version(p) for p in ("boto3", "botocore", "s3transfer", "moto")})
    return info


def _server() -> tuple[Any, str]:
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint})
    return server, endpoint


def transfer(target: str, size_mib: int, work: Path) -> dict[str, Any]:
    """Upload then download one random object of ``size_mib`` MiB; seconds and MiB/s each way."""
    from splatflow import storage

    src = work / f"up-{size_mib}.bin"
    src.write_bytes(os.urandom(size_mib << 20))
    uri = storage.join(target, f"bench/{size_mib}.bin")
    t0 = time.perf_counter()
    storage.upload(src, uri)
    t1 = time.perf_counter()
    out = storage.download(uri, work / f"down-{size_mib}.bin")
    t2 = time.perf_counter()
    same = hashlib.sha256(out.read_bytes()).hexdigest() == hashlib.sha256(src.read_bytes()).hexdigest()
    storage.delete(uri)
    src.unlink()
    out.unlink()
    return {"target": target.split(":")[0] if "://" in target else "local folder", "mib": size_mib,
            "upload_s": round(t1 - t0, 3), "download_s": round(t2 - t1, 3),
            "upload_mib_s": round(size_mib / (t1 - t0), 1), "download_mib_s": round(size_mib / (t2 - t1), 1),
            "intact": same}


def sha256_rate(work: Path) -> float:
    """MiB/s of the SHA-256 that every transfer computes (once each way)."""
    from splatflow.storage import sha256_file

    p = work / "hash.bin"
    p.write_bytes(os.urandom(256 << 20))
    t0 = time.perf_counter()
    sha256_file(p)
    rate = 256 / (time.perf_counter() - t0)
    p.unlink()
    return round(rate, 1)


def publish_guitar(target: str, work: Path) -> dict[str, Any]:
    """Publish the guitar sample (a .sog made by splat-transform + the PLY + the viewer page), twice."""
    from splatflow.stages.publish import publish

    sog = work / "guitar.sog"
    if not sog.exists():
        subprocess.run([str(ROOT / "node_modules/.bin/splat-transform"), "-q", str(ROOT / "data/splats/guitar.ply"),
                        str(sog)], check=True, capture_output=True)
    files = {"sog": sog, "ply": ROOT / "data/splats/guitar.ply"}
    t0 = time.perf_counter()
    first = publish(target, scene="guitar", run_id="bench", files=files, reports={}, overwrite=True)
    t1 = time.perf_counter()
    again = publish(target, scene="guitar", run_id="bench", files=files, reports={})
    t2 = time.perf_counter()
    return {"target": target.split(":")[0] if "://" in target else "local folder", "objects": first["objects"],
            "bytes": first["bytes"], "first_s": round(t1 - t0, 3), "again_s": round(t2 - t1, 3),
            "again_uploaded": again["uploaded"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 64, 256], help="object sizes in MiB")
    args = parser.parse_args()
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server, endpoint = _server()
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="bench")
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="splatflow-bench-") as tmp:
            work = Path(tmp)
            for size in args.sizes:
                for target in ("s3://bench/x", str(work / "store")):
                    rows.append(transfer(target, size, work))
                    print(rows[-1], flush=True)
            rate = sha256_rate(work)
            pubs = [publish_guitar(t, work) for t in ("s3://bench/out", str(work / "out"))]
    finally:
        server.stop()
    result = {"machine": machine(), "transfers": rows, "sha256_mib_s": rate, "publish": pubs,
              "multipart_part_mib": int(os.environ.get("SPLATFLOW_S3_MULTIPART_MB", "8"))}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "storage.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    lines = ["# storage and publish benchmark", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_bytes'] / 2**30:.0f} GiB; "
             f"boto3 {m['versions']['boto3']}, moto {m['versions']['moto']} (server mode, HTTP on loopback). "
             f"Parts of {result['multipart_part_mib']} MiB; SHA-256 at {rate} MiB/s on this CPU. Load average at "
             f"start {m['load_average_at_start'][0]:.1f} (a shared machine: treat the numbers as rough).", "",
             "| target | MiB | upload s | download s | up MiB/s | down MiB/s | intact |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['target']} | {r['mib']} | {r['upload_s']} | {r['download_s']} | {r['upload_mib_s']} | "
              f"{r['download_mib_s']} | {r['intact']} |" for r in rows]
    lines += ["", "Publishing the guitar sample (.sog + PLY + reports + viewer page), then the same again:", "",
              "| target | objects | bytes | first s | again s | uploaded again |", "|---|---|---|---|---|---|"]
    lines += [f"| {p['target']} | {p['objects']} | {p['bytes']:,} | {p['first_s']} | {p['again_s']} | "
              f"{p['again_uploaded']} |" for p in pubs]
    (RESULTS / "storage.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
