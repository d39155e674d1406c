"""What makes the pipeline's caching work across runs: ingest's content fingerprint of the source, and the run id
every task reads from its environment (never from a task input, which would enter every cache key)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from splatflow import storage
from splatflow.errors import InputError
from splatflow.stages.ingest import fingerprint
from splatflow.tasks import RUN_ID_ENV, checkpoint_uri, read_failure, record_failure, run_id


def _photos(data_dir: Path, dest: Path, count: int = 3) -> Path:
    dest.mkdir(parents=True)
    for src in sorted((data_dir / "photos" / "lund").glob("*.jpg"))[:count]:
        shutil.copy(src, dest / src.name)
    return dest


def test_fingerprint_follows_the_content_not_the_path_or_time(data_dir: Path, tmp_path: Path) -> None:
    a = _photos(data_dir, tmp_path / "a")
    first = fingerprint(str(a))
    assert first.startswith("sha256:") and len(first) == 7 + 64
    assert fingerprint(a.as_uri()) == first  # file:// or a path: the same source
    b = tmp_path / "b"
    shutil.copytree(a, b)  # the same photos elsewhere, with new modification times
    assert fingerprint(str(b)) == first
    photo = sorted(b.glob("*.jpg"))[0]
    data = bytearray(photo.read_bytes())
    data[-10] ^= 0xFF  # one byte of one photo
    photo.write_bytes(bytes(data))
    changed = fingerprint(str(b))
    assert changed != first
    photo.rename(photo.with_name("renamed.jpg"))
    assert fingerprint(str(b)) not in (first, changed)
    shutil.copy(photo.with_name("renamed.jpg"), b / "extra.jpg")
    assert len({first, changed, fingerprint(str(b))}) == 3
    with pytest.raises(InputError, match="does not exist"):
        fingerprint(str(tmp_path / "missing"))


def test_fingerprint_of_an_s3_prefix_uses_the_etags(data_dir: Path, tmp_path: Path,
                                                    s3_server: dict[str, str]) -> None:
    local = _photos(data_dir, tmp_path / "photos")
    prefix = f"s3://{s3_server['bucket']}/fingerprint/lund"
    storage.upload_dir(local, prefix)
    first = fingerprint(prefix)
    assert fingerprint(prefix + "/") == first and fingerprint(prefix) == first
    one = sorted(local.glob("*.jpg"))[0]
    storage.upload(one, f"{prefix}/{one.name}")  # the same bytes again: the same ETag
    assert fingerprint(prefix) == first
    other = sorted((data_dir / "photos" / "lund").glob("*.jpg"))[5]
    storage.upload(other, f"{prefix}/{one.name}")  # other bytes under the same name
    assert fingerprint(prefix) != first
    with pytest.raises(InputError, match="nothing under"):
        fingerprint(f"s3://{s3_server['bucket']}/fingerprint/empty")


def test_run_id_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(RUN_ID_ENV, raising=False)
    with pytest.raises(InputError, match=f"{RUN_ID_ENV} is not set"):
        run_id()
    with pytest.raises(InputError, match="not set"), record_failure("sfm", tmp_path.as_uri()):
        pass  # the run id is checked before the body runs
    monkeypatch.setenv(RUN_ID_ENV, "../escape")
    with pytest.raises(InputError, match="not a usable name"):
        run_id()
    monkeypatch.setenv(RUN_ID_ENV, "3f2b6c1e-0a7d-4d8e-9c1b-2a6f0e9d7c55")
    assert run_id() == "3f2b6c1e-0a7d-4d8e-9c1b-2a6f0e9d7c55"
    out = tmp_path.as_uri()
    assert checkpoint_uri(out).endswith("/.splatflow/runs/3f2b6c1e-0a7d-4d8e-9c1b-2a6f0e9d7c55/checkpoints")
    with pytest.raises(ValueError, match="boom"), record_failure("train", out):
        raise ValueError("boom")
    failure = read_failure(out, run_id())
    assert failure is not None and failure["stage"] == "train" and "ValueError: boom" in failure["error"]
