"""Codec benchmark: splatflow compress vs PlayCanvas splat-transform -g cpu, same machine, same run.

For each input (guitar SH0, playbot_lod2 125k SH2, fruit_drops_minimal SH3, a synthetic 1M SH3 scene from
bench/make_synthetic.py) runs both tools as child processes (splat-transform with its default worker count) and
records wall time, peak RSS, output bytes, bytes/splat and per-attribute mean/max errors after decoding (both
outputs decoded by our decoder, matched to the source splats by nearest position), plus render PSNR against the
source (splatflow.render, CPU, the compress report's 4 orbit views at 256 px) for both tools on inputs up to
--psnr-max splats. Where splat-transform's PSNR is known, splatflow's smaller-file mode runs too
(``compress --target-psnr`` at that PSNR): its size against splat-transform's is the trade the mode exists for.
splat-transform runs under a timeout (--peer-timeout); a run that hits it is reported as a lower bound.

Usage: python bench/codec.py [--only NAME ...] [--device cpu] [--peer-timeout 900] [--skip-peer NAME ...]
Writes bench/results/codec-<device>.json and .md, and codec-rd.png (file size against render PSNR per input:
splatflow's default and smaller-file outputs, every setting the smaller-file search tried, splat-transform).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "work" / "codec"
RESULTS = ROOT / "bench" / "results"
ST = ROOT / "node_modules" / ".bin" / "splat-transform"
PY = sys.executable


def inputs() -> dict[str, Path]:
    """name -> PLY, the small real scenes first, then the synthetic 1M one, then playbot_lod2 (splat-transform
    takes about half an hour on it: a partial run still has the rest)."""
    shared = ROOT.parent / "shared" / "data" / "splats"
    found = {}
    for name in ("guitar", "fruit_drops_minimal", "playbot_lod2"):
        for base in (ROOT / "data" / "splats", shared):
            if (base / f"{name}.ply").exists():
                found[name] = base / f"{name}.ply"
                break
    synth = WORK / "synthetic_1m_sh3.ply"
    if not synth.exists():
        synth.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([PY, str(ROOT / "bench" / "make_synthetic.py"), str(synth)], check=True)
    order = ["guitar", "fruit_drops_minimal", "synthetic_1m_sh3", "playbot_lod2"]
    found["synthetic_1m_sh3"] = synth
    return {k: found[k] for k in order if k in found}


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, load and the versions of everything measured (splat-transform included)."""
    from machine import machine_info  # bench/machine.py

    info = machine_info(("splatflow", "torch", "numpy", "pillow"))
    pkg = ROOT / "node_modules" / "@playcanvas" / "splat-transform" / "package.json"
    info["versions"]["splat-transform"] = json.loads(pkg.read_text())["version"] if pkg.exists() else None
    return info


# Runs the measured command as the child of a small, fresh process and reports that child's own rusage: a child
# forked straight from this benchmark would count the benchmark's resident memory at fork time in its peak RSS.
_LAUNCHER = """
import json, os, signal, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGKILL))  # a timeout: stop it, still report usage
_, status, ru = os.wait4(pid, 0)
with open(sys.argv[1], "w") as fh:
    json.dump({"rc": os.waitstatus_to_exitcode(status), "cpu_s": ru.ru_utime + ru.ru_stime,
               "maxrss_kb": ru.ru_maxrss}, fh)
"""


def timed(cmd: list[str], timeout: float | None) -> dict[str, Any]:
    """Run ``cmd``: wall seconds, CPU seconds and peak RSS (bytes) of that process alone, exit code, and whether
    it hit ``timeout`` (then it is killed and its numbers are lower bounds). Output goes to a file, not a pipe."""
    import signal
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        usage_file, log_file = Path(tmp) / "usage.json", Path(tmp) / "log.txt"
        start = time.perf_counter()
        with open(log_file, "wb") as log:
            proc = subprocess.Popen([PY, "-c", _LAUNCHER, str(usage_file), *cmd], stdout=log,
                                    stderr=subprocess.STDOUT, cwd=WORK, start_new_session=True)
            timed_out = False
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                proc.terminate()  # the launcher kills the command and writes its usage
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        wall = time.perf_counter() - start
        out = log_file.read_text(errors="replace")
        usage = json.loads(usage_file.read_text()) if usage_file.exists() else {}
    return {"wall_s": round(wall, 2), "cpu_s": round(usage.get("cpu_s", float("nan")), 2),
            "peak_rss_bytes": int(usage.get("maxrss_kb", 0)) * 1024, "rc": usage.get("rc", proc.returncode),
            "timed_out": timed_out, "log_tail": out[-600:]}


def matched_errors(src_path: Path, sog: Path) -> dict[str, Any]:
    """Decode ``sog`` and compare with the source PLY, splat by splat (the codec reorders splats: each source
    splat is paired with the nearest decoded position)."""
    from scipy.spatial import cKDTree  # the peer keeps NaN splats (quantized to finite values): counts may differ

    from splatflow.evaluate import attribute_errors
    from splatflow.io.ply import read_ply
    from splatflow.sog.decode import read_sog

    src = read_ply(src_path, on_invalid="drop")
    dec, _, _ = read_sog(sog)
    dec = dec.drop_invalid()[0]
    _, idx = cKDTree(dec.means.astype("f8")).query(src.means.astype("f8"))  # the decoded splat nearest to each
    dec_m = dec.subset(idx)
    return {"errors": attribute_errors(src.with_sh_degree(min(src.sh_degree, dec.sh_degree)), dec_m),
            "matched_unique": round(len(set(idx.tolist())) / len(src), 6), "splats": len(src), "decoded": dec,
            "src": src}


def render_psnr(src: Any, dec: Any) -> dict[str, Any]:
    """PSNR/SSIM of renders of the decoded cloud against renders of the source: the compress report's
    fidelity measure (4 orbit views, 256 px, splatflow's torch renderer on the CPU)."""
    from splatflow.evaluate import render_fidelity

    return render_fidelity(src, dec, views=4, size=256, device="cpu")


def measure_peer(ply: Path, theirs: Path, t: dict[str, Any], splats: int, args: argparse.Namespace
                 ) -> dict[str, Any]:
    """splat-transform's row from its run ``t`` (see :func:`timed`) and its output ``theirs``: size, errors
    against the source and render PSNR/SSIM."""
    peer: dict[str, Any] = {k: t[k] for k in ("wall_s", "cpu_s", "peak_rss_bytes", "timed_out")}
    if t["timed_out"] or t["rc"] != 0 or not theirs.exists():
        peer["note"] = (f"timed out after {args.peer_timeout} s: wall time is a lower bound" if t["timed_out"]
                        else f"failed: {t['log_tail']}")
        return peer
    peer["bytes"] = theirs.stat().st_size
    peer["bytes_per_splat"] = round(peer["bytes"] / splats, 3)
    mt = matched_errors(ply, theirs)
    peer["errors"] = mt["errors"]
    if mt["splats"] <= args.psnr_max:
        fid = render_psnr(mt["src"], mt["decoded"])
        peer["psnr_db"], peer["ssim"] = fid["psnr"], fid["ssim"]
    return peer


def reused_peer(name: str, ply: Path, splats: int, args: argparse.Namespace) -> dict[str, Any] | None:
    """splat-transform's row from an earlier run instead of a new one (it takes 15 min on playbot_lod2 and hours
    on the synthetic 1M scene with 2 cores): its output WORK/<name>.st.sog with the usage beside it
    (<name>.st.usage.json: wall_s, cpu_s, peak_rss_bytes, how it was measured), measured again here; else its row
    in the results file as it was when this run started (``args.previous``). None when neither exists. The row
    says where it came from."""
    usage = WORK / f"{name}.st.usage.json"
    theirs = WORK / f"{name}.st.sog"
    if usage.exists() and theirs.exists():
        u = json.loads(usage.read_text())
        t = {"wall_s": u["wall_s"], "cpu_s": u["cpu_s"], "peak_rss_bytes": u["peak_rss_bytes"], "timed_out": False,
             "rc": 0, "log_tail": ""}
        return {**measure_peer(ply, theirs, t, splats, args),
                "source": f"a separate run ({u.get('how', '')}; its output decoded and rendered in this run)"}
    data = args.previous
    if data:
        for row in data["rows"]:
            if row["input"] == name and "bytes" in row.get("splat_transform", {}):
                st = row["splat_transform"]
                return {**st, "source": st.get("source") or f"the run of {data['date']} (its figures copied)"}
    return None


def one(name: str, ply: Path, args: argparse.Namespace) -> dict[str, Any]:
    row: dict[str, Any] = {"input": name, "ply_bytes": ply.stat().st_size}
    ours = WORK / f"{name}.ours.sog"
    r = timed([PY, "-m", "splatflow.cli", "-q", "compress", str(ply), str(ours), "--overwrite",
               "--device", args.device, "--json"], None)
    if r["rc"] != 0:
        raise SystemExit(f"splatflow failed on {name}: {r['log_tail']}")
    report = json.loads((WORK / f"{ours.name}.report.json").read_text())
    row["splats"] = report["splats"]
    row["splatflow"] = {**{k: r[k] for k in ("wall_s", "cpu_s", "peak_rss_bytes")}, "bytes": ours.stat().st_size,
                        "bytes_per_splat": round(ours.stat().st_size / report["splats"], 3),
                        "timings": report["timings"], "device": report["device"]}
    m = matched_errors(ply, ours)
    row["splatflow"]["errors"] = m["errors"]
    if m["splats"] <= args.psnr_max:
        fid = render_psnr(m["src"], m["decoded"])
        row["splatflow"]["psnr_db"], row["splatflow"]["ssim"] = fid["psnr"], fid["ssim"]
    theirs = WORK / f"{name}.st.sog"
    if name in args.skip_peer:
        row["splat_transform"] = {"skipped": True}
    else:
        peer = reused_peer(name, ply, report["splats"], args) if name in args.reuse_peer else None
        if peer is None:
            theirs.unlink(missing_ok=True)
            t = timed([str(ST), "-w", "-g", "cpu", str(ply), str(theirs)], args.peer_timeout)
            peer = measure_peer(ply, theirs, t, report["splats"], args)
        if "bytes" in peer:
            row["size_ratio_ours_vs_peer"] = round(row["splatflow"]["bytes"] / peer["bytes"], 4)
            row["errors_not_worse"] = {k: m["errors"][k]["mean"] <= v["mean"] for k, v in peer["errors"].items()}
            if "psnr_db" in row["splatflow"] and "psnr_db" in peer:
                row["psnr_gain_db"] = round(row["splatflow"]["psnr_db"] - peer["psnr_db"], 3)
        row["speedup_vs_peer"] = round(peer["wall_s"] / row["splatflow"]["wall_s"], 2)
        row["cpu_time_ratio_peer_vs_ours"] = round(peer["cpu_s"] / max(row["splatflow"]["cpu_s"], 1e-3), 2)
        row["splat_transform"] = peer
        if "psnr_db" in peer and name not in args.skip_target:
            row["splatflow_target"] = target_run(name, ply, peer, args)
    return row


def target_run(name: str, ply: Path, peer: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """splatflow compress --target-psnr at splat-transform's render PSNR (rounded up to 0.01 dB): size, PSNR
    reached (the report's, the same 4 orbit views and renderer as ``render_psnr``), what was dropped, the
    settings tried, and the size against splat-transform's."""
    import math

    target = math.ceil(peer["psnr_db"] * 100) / 100
    out = WORK / f"{name}.target.sog"
    r = timed([PY, "-m", "splatflow.cli", "-q", "compress", str(ply), str(out), "--overwrite", "--device",
               args.device, "--target-psnr", f"{target:.2f}", "--json"], None)
    if r["rc"] != 0:
        return {"target_psnr": target, "note": f"failed: {r['log_tail']}"}
    rep = json.loads((WORK / f"{out.name}.report.json").read_text())
    tg = rep["target"]
    return {"target_psnr": target, **{k: r[k] for k in ("wall_s", "cpu_s", "peak_rss_bytes")},
            "bytes": rep["bytes"], "splats": rep["splats"], "psnr_db": tg["psnr"],
            "ssim": (rep["fidelity"] or {}).get("ssim"), "dropped": tg["dropped"],
            "size_ratio_vs_peer": round(rep["bytes"] / peer["bytes"], 4),
            "tried": [{"bytes": t["bytes"], "psnr_db": t["psnr"]} for t in tg["tried"]]}


def markdown(result: dict[str, Any]) -> str:
    mach = result["machine"]
    lines = [f"# Codec benchmark ({result['date']}, device {result['device']})", "",
             f"Machine: {mach['cpu']}, {mach['cores']} cores, {mach['memory_bytes'] / 2**30:.0f} GiB; "
             f"load average at start {mach['load_average_at_start']}. {result['note']}", "",
             f"Versions: {mach['versions']}", "",
             "| input | splats | tool | wall s | CPU s | peak RSS MB | bytes | B/splat | pos mean | log-scale mean | "
             "colour mean (8-bit) | opacity mean (8-bit) | rotation mean deg | SH mean | PSNR dB | SSIM |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        for tool in ("splatflow", "splat_transform"):
            r = row.get(tool, {})
            if r.get("skipped"):
                lines.append(f"| {row['input']} | {row['splats']:,} | {tool} | skipped | | | | | | | | | | | | |")
                continue
            e = r.get("errors", {})

            def g(k: str, e: dict[str, Any] = e) -> str:
                return f"{e[k]['mean']:.4g}" if k in e else "-"
            wall = f"{r.get('wall_s', '-')}" + (" (timeout, lower bound)" if r.get("timed_out") else "")
            lines.append(
                f"| {row['input']} | {row['splats']:,} | {tool} | {wall} | {r.get('cpu_s', '-')} | "
                f"{r.get('peak_rss_bytes', 0) / 1e6:.0f} | "
                f"{r.get('bytes', '-')} | {r.get('bytes_per_splat', '-')} | {g('position')} | {g('log_scale')} | "
                f"{g('color')} | {g('opacity')} | {g('rotation')} | {g('sh_rest')} | "
                f"{r.get('psnr_db', '-')} | {r.get('ssim', '-')} |")
    lines += ["", "Errors: mean over splats of |decoded - source| (position: Euclidean distance; rotation: angle "
              "between the frames, the candidate's taken nearest the source's among the 24 that give the same "
              "Gaussian; log-scale in that frame), both outputs decoded by splatflow's decoder and matched to the "
              "source by nearest position. splatflow's codebooks weigh each value by what it shows on screen (log-"
              "scales by alpha x extent^2, colours and SH by alpha x area), so tiny or transparent splats may carry"
              " larger log-scale errors than with equal weights while the picture is closer: PSNR/SSIM compare "
              "renders of the decoded splats with renders of the source (4 orbit views around the dense region, "
              "256x256, splatflow's torch renderer on the CPU; '-': not measured).", ""]
    targets = [row for row in result["rows"] if "bytes" in row.get("splatflow_target", {})]
    if targets:
        lines += ["Smaller-file mode (`compress --target-psnr`, target = splat-transform's render PSNR on the same "
                  "views, rounded up to 0.01 dB; the search and the final write together):", "",
                  "| input | target dB | reached dB | bytes | vs splat-transform | splats dropped | settings changed "
                  "| wall s |",
                  "|---|---|---|---|---|---|---|---|"]
        for row in targets:
            t = row["splatflow_target"]
            coarse = ", ".join(f"{k} {v}" for k, v in t["dropped"]["precision"].items()) or "-"
            lines.append(f"| {row['input']} | {t['target_psnr']} | {t['psnr_db']} | {t['bytes']} | "
                         f"{t['size_ratio_vs_peer']:.3f} ({1 - t['size_ratio_vs_peer']:.1%} smaller) | "
                         f"{t['dropped']['splats']:,} ({t['dropped']['splats_fraction']:.1%}) | {coarse} | "
                         f"{t['wall_s']} |")
        lines.append("")
    for row in result["rows"]:
        if "speedup_vs_peer" in row:
            lines.append(f"- {row['input']}: splatflow {row['speedup_vs_peer']}x faster (wall) and "
                         f"{row['cpu_time_ratio_peer_vs_ours']}x less CPU time than splat-transform"
                         + (f", size ratio {row['size_ratio_ours_vs_peer']}" if "size_ratio_ours_vs_peer" in row
                            else "") + (f", render PSNR {row['psnr_gain_db']:+.2f} dB" if "psnr_gain_db" in row
                                        else "") + (f", mean errors not worse: {row['errors_not_worse']}"
                                                    if "errors_not_worse" in row else ""))
    for row in result["rows"]:
        if row.get("splat_transform", {}).get("source"):
            lines.append(f"- {row['input']}: splat-transform was not re-run; its row is from "
                         f"{row['splat_transform']['source']}")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description="SOG codec benchmark vs splat-transform")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--peer-timeout", type=float, default=600.0)
    ap.add_argument("--skip-peer", nargs="*", default=[])
    ap.add_argument("--reuse-peer", nargs="*", default=[],
                    help="inputs whose splat-transform row comes from an earlier run (see reused_peer)")
    ap.add_argument("--psnr-max", type=int, default=2_000_000, help="skip the render PSNR above this many splats")
    ap.add_argument("--tag", default="", help="suffix of the result files (parallel partial runs)")
    ap.add_argument("--note", default="", help="e.g. that the machine was shared with other work")
    ap.add_argument("--skip-target", nargs="*", default=[], help="inputs without the smaller-file run")
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows of the inputs not run from the existing results file (a partial re-run)")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "device": args.device,
                              "machine": machine(), "note": args.note, "rows": []}
    stem = f"codec-{args.device}" + (f"-{args.tag}" if args.tag else "")
    out_json = RESULTS / f"{stem}.json"
    kept: list[dict[str, Any]] = []
    args.previous = json.loads(out_json.read_text()) if out_json.exists() else None
    if args.merge and out_json.exists():
        old = json.loads(out_json.read_text())
        kept = [r for r in old["rows"] if not args.only or r["input"] not in args.only]
        result["note"] = (result["note"] + f" Rows of {', '.join(r['input'] for r in kept)} are from the run of "
                          f"{old['date']}.").strip()
    new: list[dict[str, Any]] = []
    order = list(inputs())
    for name, ply in inputs().items():
        if args.only and name not in args.only:
            continue
        print(f"== {name}", flush=True)
        new.append(one(name, ply, args))
        result["rows"] = sorted([*kept, *new], key=lambda r: order.index(r["input"]))
        result["machine"]["load_average_at_end"] = os.getloadavg()
        out_json.write_text(json.dumps(result, indent=2))
        (RESULTS / f"{stem}.md").write_text(markdown(result))
        draw_rd(result, RESULTS / ("codec-rd" + (f"-{args.tag}" if args.tag else "") + ".png"))
        print(json.dumps({k: v for k, v in result["rows"][-1].items()}, default=str)[:1500], flush=True)


def draw_rd(result: dict[str, Any], path: Path) -> None:
    """File size against render PSNR, one panel per input: splatflow's default output, its smaller-file output,
    every setting the smaller-file search tried (real encodes, default WebP effort), splat-transform."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[dev]'): no codec-rd.png", flush=True)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if "psnr_db" in r["splatflow"]]
    if not rows:
        return
    fig, axes = plt.subplots(1, len(rows), figsize=(4.2 * len(rows), 3.8), squeeze=False)
    for ax, row in zip(axes[0], rows, strict=True):
        tg, peer = row.get("splatflow_target", {}), row.get("splat_transform", {})
        if tg.get("tried"):
            pts = sorted((t["bytes"] / 1e6, t["psnr_db"]) for t in tg["tried"])
            ax.scatter(*zip(*pts, strict=True), s=12, c="0.7", label="settings tried (search)")
        ax.scatter([row["splatflow"]["bytes"] / 1e6], [row["splatflow"]["psnr_db"]], marker="o", c="C0", s=50,
                   label="splatflow default")
        if "bytes" in tg:
            ax.scatter([tg["bytes"] / 1e6], [tg["psnr_db"]], marker="*", c="C2", s=140,
                       label=f"splatflow --target-psnr {tg['target_psnr']}")
        if "psnr_db" in peer:
            ax.scatter([peer["bytes"] / 1e6], [peer["psnr_db"]], marker="X", c="C3", s=80,
                       label=f"splat-transform {result['machine']['versions'].get('splat-transform')}")
            ax.axhline(peer["psnr_db"], c="C3", lw=0.6, ls=":")
            ax.axvline(0.75 * peer["bytes"] / 1e6, c="C3", lw=0.6, ls="--")
        ax.set_title(f"{row['input']} ({row['splats']:,} splats)", fontsize=9)
        ax.set_xlabel("file size, MB")
        ax.set_ylabel("render PSNR vs source, dB")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower right")
    fig.suptitle("SOG size against render PSNR (4 orbit views, 256 px; dashed: 75% of splat-transform's size)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
