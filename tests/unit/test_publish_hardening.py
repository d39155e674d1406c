"""Publish under stress: one writer per run id (a second publish of the same run id fails at once, the result is
exactly one writer's), inputs checked to be what they claim (a SOG folder gives only its own files and no link is
followed; random bytes are no .sog), bytes changed on the way to the store are caught before the manifest, and
another process's files in progress are never swept."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from s3_proxy import Request, s3_proxy

from splatflow import storage
from splatflow.errors import InputError, OutputBusyError, PlyError, SogError, StorageError
from splatflow.stages import publish as publish_mod
from splatflow.stages.publish import lock_uri, publish, read_latest, read_manifest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def sog_dir(sample_sog: Path, tmp_path: Path) -> Path:
    out = tmp_path / "sogdir"
    with zipfile.ZipFile(sample_sog) as zf:
        zf.extractall(out)
    return out


def _objects(base: str) -> dict[str, bytes]:
    return {uri[len(base.rstrip("/")) + 1:]: storage.read_bytes(uri) for uri in storage.list_uris(base)}


def _matches_manifest(base: str) -> dict[str, Any]:
    """Every object under ``base`` is in the manifest with its exact size and SHA-256, and nothing else is."""
    objects = _objects(base)
    manifest = json.loads(objects.pop("manifest.json"))
    assert set(manifest["objects"]) == set(objects)
    for rel, entry in manifest["objects"].items():
        assert entry["sha256"] == hashlib.sha256(objects[rel]).hexdigest() and entry["bytes"] == len(objects[rel])
    return manifest


def _where(kind: str, s3: dict[str, str] | None, tmp_path: Path, name: str) -> str:
    return f"s3://{s3['bucket']}/{name}" if kind == "s3" and s3 else str(tmp_path / "out")


@pytest.fixture(params=["s3", "local"])
def out(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "s3":
        s3 = request.getfixturevalue("s3_server")
        return f"s3://{s3['bucket']}/{request.node.name.replace('[', '-').rstrip(']')}"
    return str(tmp_path / "out")


# ---------------------------------------------------------------------------- one writer per run id
def test_a_second_writer_of_the_same_run_id_fails_at_once(out: str, sample_sog: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Writer A is held mid-upload; writer B (different content) must fail with a clear message without writing
    anything; A then completes, and what is published is exactly A's."""
    inside, go_on = threading.Event(), threading.Event()
    real_upload = storage.upload

    def held_upload(path: Path, uri: str, **kw: Any) -> str:
        if not go_on.is_set():  # only writer A ever uploads while the test holds it
            inside.set()
            assert go_on.wait(60)
        return real_upload(path, uri, **kw)

    monkeypatch.setattr(storage, "upload", held_upload)
    result: dict[str, Any] = {}

    def writer_a() -> None:
        result["a"] = publish(out, scene="s", run_id="r", files={"sog": sample_sog}, reports={"a": {"writer": "a"}},
                              viewer=False)

    thread = threading.Thread(target=writer_a)
    thread.start()
    try:
        assert inside.wait(60)
        lock = storage.read_bytes(lock_uri(out, "s", "r"))
        assert json.loads(lock)["pid"] == os.getpid()
        with pytest.raises(OutputBusyError, match="being published by another process right now") as busy:
            publish(out, scene="s", run_id="r", files={"sog": sample_sog}, reports={"b": {"writer": "b"}},
                    viewer=False)
        assert "two writers would mix" in busy.value.message and "run id" in (busy.value.hint or "")
    finally:
        go_on.set()
        thread.join(60)
    manifest = _matches_manifest(f"{out}/s/r")
    assert set(manifest["objects"]) == {"s.sog", "reports/a.json"}
    assert json.loads(storage.read_bytes(f"{out}/s/r/reports/a.json")) == {"writer": "a"}
    assert result["a"]["manifest_uri"] == f"{out}/s/r/manifest.json"
    assert not storage.exists(lock_uri(out, "s", "r"))  # released


def test_two_publish_processes_race(s3_server: dict[str, str], sample_sog: Path, tmp_path: Path,
                                    request: pytest.FixtureRequest) -> None:
    """Two real `splatflow publish` processes, same run id, different content, started together: one succeeds,
    the other exits 2 with a clear line; what is published is exactly the winner's."""
    out = f"s3://{s3_server['bucket']}/{request.node.name}"
    cmds = []
    for who in ("a", "b"):
        (tmp_path / f"{who}.json").write_text(json.dumps({"writer": who}))
        cmds.append([sys.executable, "-m", "splatflow.cli", "publish", out, "--scene", "s", "--run-id", "r",
                     "--sog", str(sample_sog), "--report", f"compress={tmp_path / f'{who}.json'}", "--no-viewer"])
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cmds]
    results = [(p.wait(120), p.communicate()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser_err = next(err for code, (_, err) in results if code == 2)
    assert loser_err.splitlines()[-2].startswith("error: ") and loser_err.splitlines()[-1].startswith("hint: ")
    assert "Traceback" not in loser_err
    assert ("being published by another process" in loser_err
            or "already published with different content" in loser_err), loser_err
    winner = "ab"[[code for code, _ in results].index(0)]
    _matches_manifest(f"{out}/s/r")
    assert json.loads(storage.read_bytes(f"{out}/s/r/reports/compress.json")) == {"writer": winner}
    assert read_latest(out, "s")["run_id"] == "r"  # type: ignore[index]
    assert not storage.exists(lock_uri(out, "s", "r"))


def test_an_expired_lock_is_taken_over(out: str, sample_sog: Path, caplog: pytest.LogCaptureFixture) -> None:
    stale = {"owner": "dead", "host": "gone", "pid": 1, "renewed": time.time() - 600, "expires": time.time() - 540}
    storage.write_bytes(lock_uri(out, "s", "r"), json.dumps(stale).encode())
    publish(out, scene="s", run_id="r", files={"sog": sample_sog}, reports={}, viewer=False)
    assert "taking over the expired publish lock" in caplog.text
    assert read_manifest(out, "s", "r") is not None and not storage.exists(lock_uri(out, "s", "r"))


def test_a_lost_lock_never_marks_the_run_complete(out: str, sample_sog: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process takes the lock over mid-publish (this one stalled past its expiry): no manifest."""
    real_upload = storage.upload

    def usurp(path: Path, uri: str, **kw: Any) -> str:
        storage.write_bytes(lock_uri(out, "s", "r"), json.dumps({"owner": "other", "expires": 1e12}).encode())
        return real_upload(path, uri, **kw)

    monkeypatch.setattr(storage, "upload", usurp)
    with pytest.raises(OutputBusyError, match="lost its lock"):
        publish(out, scene="s", run_id="r", files={"sog": sample_sog}, reports={}, viewer=False)
    assert read_manifest(out, "s", "r") is None and read_latest(out, "s") is None
    assert json.loads(storage.read_bytes(lock_uri(out, "s", "r")))["owner"] == "other"  # not ours to remove


# ---------------------------------------------------------------------------- inputs are what they claim
def test_meta_folder_publishes_only_the_sogs_own_files(sog_dir: Path, tmp_path: Path) -> None:
    (sog_dir / "notes.txt").write_text("private notes")
    (sog_dir / "sub").mkdir()
    (sog_dir / "sub" / "x.webp").write_bytes(b"not published")
    publish(str(tmp_path / "out"), scene="s", run_id="r", files={"meta": sog_dir}, reports={}, viewer=False)
    meta = json.loads((sog_dir / "meta.json").read_text())
    named = {f for key in ("means", "scales", "quats", "sh0", "shN") if key in meta for f in meta[key]["files"]}
    assert set(_matches_manifest(str(tmp_path / "out/s/r"))["objects"]) == {"sog/meta.json"} | {
        f"sog/{f}" for f in named}


@pytest.mark.parametrize("link", ["member", "meta.json", "folder"])
def test_meta_folder_never_follows_a_symlink(sog_dir: Path, tmp_path: Path, link: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from splatflow.cli import main

    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    given = sog_dir
    if link == "member":
        (sog_dir / "sh0.webp").unlink()
        (sog_dir / "sh0.webp").symlink_to(secret)
    elif link == "meta.json":
        real = tmp_path / "meta-real.json"
        (sog_dir / "meta.json").rename(real)
        (sog_dir / "meta.json").symlink_to(real)
    else:
        given = tmp_path / "linked"
        given.symlink_to(sog_dir)
    out = tmp_path / "out"
    assert main(["publish", str(out), "--scene", "s", "--run-id", "r", "--meta", str(given), "--no-viewer"]) == 2
    err = capsys.readouterr().err
    assert "symbolic link" in err and "never follows links" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(("key", "content", "error", "needle"), [
    ("sog", os.urandom(4096), SogError, "not a .sog bundle"),
    ("sog", None, SogError, "has 16 texels for 90,854 splats"),   # a real ZIP whose images do not fit the count
    ("ply", os.urandom(4096), PlyError, "is not a PLY file"),
    ("ply", b"ply\nformat binary_little_endian 1.0\nelement vertex 1000\nproperty float x\nend_header\n" + b"\0" * 40,
     PlyError, "is truncated"),
    ("ply", b"ply\nformat ascii 1.0\nelement face 3\nproperty float x\nend_header\n1\n2\n3\n", PlyError,
     "has no vertices"),
])
def test_files_are_checked_to_be_what_they_claim(sample_sog: Path, tmp_path: Path, key: str,
                                                 content: bytes | None, error: type[Exception], needle: str) -> None:
    bad = tmp_path / f"bad.{key}"
    if content is None:
        with zipfile.ZipFile(sample_sog) as src, zipfile.ZipFile(bad, "w") as dst:
            for name in src.namelist():
                dst.writestr(name, src.read(name) if name == "meta.json" else _tiny_webp())
    else:
        bad.write_bytes(content)
    files = {"sog": sample_sog, key: bad}
    with pytest.raises(error, match=needle):
        publish(str(tmp_path / "out"), scene="s", run_id="r", files=files, reports={}, viewer=False)
    assert not (tmp_path / "out").exists()


def _tiny_webp() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGBA", (4, 4)).save(buf, "WEBP", lossless=True)
    return buf.getvalue()


def test_cli_publish_of_random_bytes_and_bad_reports(tmp_path: Path, sample_sog: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from splatflow.cli import main

    fake = tmp_path / "fake.sog"
    fake.write_bytes(os.urandom(2048))
    out = tmp_path / "out"
    base = ["publish", str(out), "--scene", "s", "--run-id", "r", "--no-viewer"]
    assert main([*base, "--sog", str(fake)]) == 2
    assert "fake.sog is not a .sog bundle" in capsys.readouterr().err
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    assert main([*base, "--sog", str(sample_sog), "--report", f"train={deep}"]) == 2
    assert "levels deep" in capsys.readouterr().err
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    assert main([*base, "--sog", str(sample_sog), "--report", f"train={listed}"]) == 2
    assert "not an object" in capsys.readouterr().err
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.write(b"{")
        f.truncate(64 << 20)
    assert main([*base, "--sog", str(sample_sog), "--report", f"train={big}"]) == 2
    assert "more than the 16,777,216 accepted" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(InputError, match="not a JSON object"):
        publish(str(out), scene="s", run_id="r", files={"sog": sample_sog}, reports={"x": [1]}, viewer=False)  # type: ignore[dict-item]


# ---------------------------------------------------------------------------- what the server stored
def _flip_sog(times: int) -> Any:
    """A proxy hook flipping one byte of the first ``times`` uploads of the .sog."""
    count = {"n": 0}

    def hook(req: Request) -> None:
        if req.method == "PUT" and req.path.split("?")[0].endswith(".sog") and count["n"] < times:
            count["n"] += 1
            body = bytearray(req.body)
            body[len(body) // 2] ^= 0x01
            req.body = bytes(body)

    return hook


def test_a_byte_flipped_on_the_way_is_uploaded_again(s3_server: dict[str, str], sample_sog: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture,
                                                     request: pytest.FixtureRequest) -> None:
    out = f"s3://{s3_server['bucket']}/{request.node.name}"
    with s3_proxy(s3_server["endpoint"]) as proxy:
        proxy.hook = _flip_sog(1)
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        publish(out, scene="s", run_id="r", files={"sog": sample_sog}, reports={}, viewer=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server["endpoint"])
    assert "holds different bytes" in caplog.text
    assert storage.read_bytes(f"{out}/s/r/s.sog") == sample_sog.read_bytes()
    _matches_manifest(f"{out}/s/r")


def test_a_store_that_keeps_corrupting_is_never_marked_complete(s3_server: dict[str, str], sample_sog: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 request: pytest.FixtureRequest) -> None:
    out = f"s3://{s3_server['bucket']}/{request.node.name}"
    publish(out, scene="s", run_id="old", files={"sog": sample_sog}, reports={}, viewer=False)
    latest = storage.read_bytes(f"{out}/s/latest.json")
    with s3_proxy(s3_server["endpoint"]) as proxy:
        proxy.hook = _flip_sog(100)
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        with pytest.raises(StorageError, match="kept storing different bytes"):
            publish(out, scene="s", run_id="new", files={"sog": sample_sog}, reports={}, viewer=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server["endpoint"])
    assert read_manifest(out, "s", "new") is None
    assert storage.read_bytes(f"{out}/s/latest.json") == latest
    assert not storage.exists(lock_uri(out, "s", "new"))


def test_another_writers_files_in_progress_are_never_swept(sample_sog: Path, tmp_path: Path) -> None:
    run = tmp_path / "out" / "s" / "r"
    run.mkdir(parents=True)
    in_progress = run / ".s.sog.k2j3h4.partial"  # what storage writes before its atomic rename
    in_progress.write_bytes(b"half a file")
    (run / "old-leftover.bin").write_bytes(b"from an earlier publish of this run")
    publish(str(tmp_path / "out"), scene="s", run_id="r", files={"sog": sample_sog}, reports={}, viewer=False)
    assert in_progress.read_bytes() == b"half a file"
    assert not (run / "old-leftover.bin").exists()
    assert set(json.loads((run / "manifest.json").read_text())["objects"]) == {"s.sog"}
    assert not (tmp_path / "out" / ".splatflow").exists()  # the lock's folders went with it


def test_publish_checks_stored_bytes_before_the_manifest(sample_sog: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    order: list[str] = []
    real_verify, real_write = storage.verify_stored, storage.write_bytes

    def verify(uri: str, *a: Any, **kw: Any) -> bool:
        order.append(f"verify {uri.rsplit('/', 1)[-1]}")
        return real_verify(uri, *a, **kw)

    def write(uri: str, data: bytes, **kw: Any) -> str:
        order.append(f"write {uri.rsplit('/', 1)[-1]}")
        return real_write(uri, data, **kw)

    monkeypatch.setattr(storage, "verify_stored", verify)
    monkeypatch.setattr(storage, "write_bytes", write)
    monkeypatch.setattr(publish_mod, "_PARALLEL", 1)
    publish(str(tmp_path / "out"), scene="s", run_id="r", files={"sog": sample_sog}, reports={"t": {}},
            viewer=False)
    assert order == ["verify s.sog", "verify t.json", "write manifest.json", "write latest.json"]
