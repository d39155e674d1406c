"""SIGTERM and SIGINT leave nothing behind: a real `splatflow` process is signalled while its temporary files
exist, and must exit 143 / 130 with one line, no traceback, and no `.work` / `.partial` file or output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from splatflow.errors import Terminated
from splatflow.fsutil import terminate_cleanly

ROOT = Path(__file__).resolve().parents[2]
EXIT = {signal.SIGTERM: 143, signal.SIGINT: 130}


def _default_signals() -> None:
    """In the child before exec: SIGINT and SIGTERM at their defaults. A test runner started in the background of
    a non-interactive shell inherits SIGINT ignored, and Python would keep ignoring it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@pytest.fixture(scope="module")
def many_photos(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """96 distinct photos (the 12 lund photos, each mirrored, rotated and cropped): ingest takes seconds."""
    out = tmp_path_factory.mktemp("photos")
    for src in sorted((data_dir / "photos" / "lund").glob("*.jpg")):
        im = Image.open(src).convert("RGB")
        variants = [im, ImageOps.mirror(im), ImageOps.flip(im), im.rotate(90, expand=True),
                    im.crop((0, 0, im.width * 3 // 4, im.height)), im.crop((im.width // 4, 0, im.width, im.height)),
                    ImageOps.mirror(im).rotate(90, expand=True), ImageOps.grayscale(im).convert("RGB")]
        for i, v in enumerate(variants):
            v.save(out / f"{src.stem}-{i}.jpg", quality=92)
    return out


def _env(tmp: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "TMPDIR": str(tmp)}


def _signal_when(proc: subprocess.Popen[str], ready: Callable[[], bool], sig: signal.Signals,
                 timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None and not ready():
        time.sleep(0.02)
    assert proc.poll() is None, f"the command ended before it could be signalled: {proc.communicate()}"
    assert ready(), "the temporary files never appeared"
    proc.send_signal(sig)


def _ended_cleanly(proc: subprocess.Popen[str], sig: signal.Signals) -> str:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT[sig], err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] in ("terminated (SIGTERM)", "interrupted"), err
    return err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_ingest_leaves_nothing_behind(many_photos: Path, tmp_path: Path, sig: signal.Signals) -> None:
    work = tmp_path / "work"
    work.mkdir()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    out = work / "new" / "ingest"  # its parent folder is created by ingest: it must go too
    proc = subprocess.Popen([sys.executable, "-m", "splatflow.cli", "ingest", str(many_photos), str(out),
                             "--max-side", "1600"], env=_env(tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_default_signals)

    def busy() -> bool:
        names = [p.name for p in (work / "new").iterdir()] if (work / "new").exists() else []
        return any(".work." in n for n in names) and any(n.endswith(".partial") for n in names) and \
            any((work / "new").glob(".ingest.*.partial/images/*.jpg"))

    _signal_when(proc, busy, sig)
    _ended_cleanly(proc, sig)
    assert list(work.iterdir()) == [] and list(tmp.iterdir()) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_publish_leaves_nothing_behind(sample_sog: Path, tmp_path: Path, sig: signal.Signals) -> None:
    """Signalled mid-upload: no temporary file in the output, no lock, no manifest; a re-run completes."""
    from splatflow.stages.publish import publish, read_manifest

    big = tmp_path / "big.ply"
    n = 16_000_000  # 192 MB (sparse on disk): the copy takes long enough to be caught
    header = f"ply\nformat binary_little_endian 1.0\nelement vertex {n}\nproperty float x\nproperty float y\n" \
             "property float z\nend_header\n"
    with open(big, "wb") as f:
        f.write(header.encode())
        f.truncate(len(header) + n * 12)
    out = tmp_path / "out"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "splatflow.cli", "publish", str(out), "--scene", "s", "--run-id",
                             "r", "--sog", str(sample_sog), "--ply", str(big), "--no-viewer"], env=_env(tmp),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_signals)
    _signal_when(proc, lambda: any((out / "s" / "r").glob(".s.ply.*.partial")), sig)
    _ended_cleanly(proc, sig)
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".") or p.name == "manifest.json"]
    assert leftovers == [] and list(tmp.iterdir()) == []
    assert read_manifest(str(out), "s", "r") is None
    res = publish(str(out), scene="s", run_id="r", files={"sog": sample_sog, "ply": big}, reports={}, viewer=False)
    assert res["objects"] == 2 and read_manifest(str(out), "s", "r") is not None


def test_sfm_leaves_nothing_behind(tmp_path: Path, data_dir: Path) -> None:
    """pycolmap holds the signal until its current call returns; then the work folder goes too."""
    pytest.importorskip("pycolmap")
    work = tmp_path / "work"
    work.mkdir()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "splatflow.cli", "sfm", str(data_dir / "photos" / "lund"),
                             str(work / "sfm"), "--max-side", "640", "--threads", "1"], env=_env(tmp),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_signals)
    _signal_when(proc, lambda: any(work.glob(".sfm.work.*/database.db")), signal.SIGTERM)
    _ended_cleanly(proc, signal.SIGTERM)
    assert list(work.iterdir()) == [] and list(tmp.iterdir()) == []


def test_terminate_cleanly_in_process() -> None:
    """The handler raises Terminated (a SystemExit: `except Exception` does not swallow it), once; the old
    handler comes back after the block; an existing handler is left alone."""
    cleaned = []
    with pytest.raises(Terminated) as exc, terminate_cleanly():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except Exception:  # noqa: BLE001 - must not catch it
            cleaned.append("swallowed")
        finally:
            cleaned.append("finally")
    assert cleaned == ["finally"] and exc.value.code == 143
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    mine = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        own = signal.getsignal(signal.SIGTERM)
        with terminate_cleanly():
            assert signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, mine)


def test_a_terminated_stage_is_recorded_for_the_notification(tmp_path: Path) -> None:
    from splatflow.tasks import read_failure, record_failure

    with pytest.raises(Terminated), record_failure("train", str(tmp_path), "run-1"):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    failure = read_failure(str(tmp_path), "run-1")
    assert failure is not None and failure["stage"] == "train" and "SIGTERM" in failure["error"]
