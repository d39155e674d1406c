"""Ingest stage: folders, zips, S3 prefixes; EXIF orientation, resizing, per-image report, and unsafe input refused."""

from __future__ import annotations

import json
import shutil
import stat
import struct
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from PIL import Image

from splatflow import imaging
from splatflow.cli import main
from splatflow.errors import ImageError, InputError, OutputExistsError, StorageError
from splatflow.stages.ingest import ingest

PHOTOS = Path(__file__).resolve().parents[2] / "data" / "photos" / "lund"


def _photos(n: int = 12) -> list[Path]:
    return sorted(PHOTOS.glob("*.jpg"))[:n]


def _lund12(tmp_path: Path) -> str:
    """A folder with the first 12 sample photos and the licence file (the bundled set has 29 photos; these tests
    were written for 12), beside ``tmp_path`` so the tests' listings of ``tmp_path`` stay exact."""
    dest = tmp_path.parent / f"{tmp_path.name}-lund12"
    if not dest.exists():
        _copy_photos(dest, 12)
        shutil.copy(PHOTOS / "LICENSE_OpenSfM", dest / "LICENSE_OpenSfM")
    return str(dest)


def _copy_photos(dest: Path, n: int) -> Path:
    """A fresh folder ``dest`` holding the first ``n`` sample photos."""
    dest.mkdir()
    for p in _photos(n):
        shutil.copy(p, dest / p.name)
    return dest


def _listing(parent: Path) -> list[str]:
    """Every entry of ``parent``, hidden ones (temporary folders) included."""
    return sorted(p.name for p in parent.iterdir())


def _bomb_png(path: Path, width: int, height: int) -> None:
    """A valid-looking PNG whose header claims ``width`` x ``height`` (with almost no pixel data)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_folder_of_photos(tmp_path: Path) -> None:
    out = tmp_path / "ingest"
    report = ingest(_lund12(tmp_path), out, max_side=512)
    names = [p.name for p in _photos()]
    assert report["source_kind"] == "folder" and report["content"] == "photos"
    assert report["kept"] == names
    assert report["rejected"] == {"LICENSE_OpenSfM": report["rejected"]["LICENSE_OpenSfM"]}
    assert "not a photo" in report["rejected"]["LICENSE_OpenSfM"]
    assert sorted(p.name for p in (out / "images").iterdir()) == names
    assert json.loads((out / "ingest-report.json").read_text()) == report
    for name in names:
        with Image.open(out / "images" / name) as im:
            assert im.size == (512, 384) and im.mode == "RGB"
            exif = im.getexif()
            # camera intrinsics kept (SfM's focal prior), private data dropped
            assert exif.get_ifd(0x8769).get(0xA405) == 35
            assert 0x8825 not in exif and 0x010E not in exif  # no GPS, no description (it holds an e-mail)
        assert report["images"][name]["from"] == name and report["images"][name]["sharpness"] > 50
    assert _listing(tmp_path) == ["ingest"]


def test_exif_orientation_png_and_heic_report(tmp_path: Path) -> None:
    src = _copy_photos(tmp_path / "src", 3)
    # 04: stored landscape with "rotate 90 CW" (orientation 6): must come out portrait, top-left from the left-bottom
    with Image.open(_photos(4)[3]) as im:
        exif = im.getexif()
        exif[0x0112] = 6
        im.save(src / "04.jpg", exif=exif.tobytes(), quality=95)
        pixels = np.asarray(im.convert("RGB"), dtype=np.float32)
    Image.fromarray(pixels.astype(np.uint8)).save(src / "05.png")
    (src / "06.heic").write_bytes(b"not really heic")
    if imaging.heic_supported():  # an iPhone-style HEIC with the same EXIF orientation
        with Image.open(_photos(6)[5]) as im:
            exif = im.getexif()
            exif[0x0112] = 6
            im.save(src / "08.heic", quality=90, exif=exif.tobytes())
            heic_expected = np.rot90(np.asarray(im.convert("RGB"), dtype=np.float32), k=-1)
    (src / "sub").mkdir()
    shutil.copy(_photos(5)[4], src / "sub" / "07 photo.JPG")
    report = ingest(str(src), tmp_path / "out", max_side=1024)
    images = tmp_path / "out" / "images"
    with Image.open(images / "04.jpg") as im:
        assert im.size == (768, 1024)
        rotated = np.asarray(im, dtype=np.float32)
    # orientation 6 means: rotate the stored pixels 90 degrees clockwise for display
    expected = np.rot90(pixels, k=-1)
    assert np.abs(rotated - expected).mean() < 4.0
    assert "05.png" in report["kept"] and (images / "05.png").exists()
    assert "sub_07_photo.jpg" in report["kept"] and report["images"]["sub_07_photo.jpg"]["from"] == "sub/07 photo.JPG"
    if not imaging.heic_supported():
        assert "HEIC" in report["rejected"]["06.heic"]
    else:
        assert "not a readable image" in report["rejected"]["06.heic"]
        with Image.open(images / "08.jpg") as im:  # decoded, upright, stored as JPEG
            assert im.size == (768, 1024)
            assert np.abs(np.asarray(im, dtype=np.float32) - heic_expected).mean() < 6.0


def test_corrupt_duplicate_and_bomb_rejected_not_fatal(tmp_path: Path) -> None:
    src = _copy_photos(tmp_path / "src", 4)
    data = _photos(5)[4].read_bytes()
    (src / "05_truncated.jpg").write_bytes(data[: len(data) // 2])
    (src / "06_garbage.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    shutil.copy(_photos()[0], src / "07_copy.jpg")
    with Image.open(_photos()[1]) as im:  # re-encoded copy: different bytes, same picture
        im.save(src / "08_reencoded.jpg", quality=90)
    _bomb_png(src / "09_bomb.png", 100_000, 100_000)
    _bomb_png(src / "10_big.png", 12_000, 10_000)
    Image.new("RGB", (40, 30), "white").save(src / "11_tiny.png")
    report = ingest(str(src), tmp_path / "out", max_side=400, max_pixels=100_000_000)
    rej = report["rejected"]
    assert report["kept"] == ["01.jpg", "02.jpg", "03.jpg", "04.jpg"]
    assert "corrupt or truncated" in rej["05_truncated.jpg"]
    assert "not a readable image" in rej["06_garbage.jpg"]
    assert "duplicate of 01.jpg" in rej["07_copy.jpg"]
    assert "near-duplicate of 02.jpg" in rej["08_reencoded.jpg"]
    assert "decompression bomb" in rej["09_bomb.png"]
    assert "120,000,000 pixels is over the limit" in rej["10_big.png"]
    assert "too small" in rej["11_tiny.png"]


def test_blurred_photo_rejected(tmp_path: Path) -> None:
    from PIL import ImageFilter

    src = _copy_photos(tmp_path / "src", 6)
    with Image.open(_photos(7)[6]) as im:
        im.filter(ImageFilter.GaussianBlur(8)).save(src / "07.jpg")
    report = ingest(str(src), tmp_path / "out", max_side=640)
    assert "blurred" in report["rejected"]["07.jpg"]
    assert len(report["kept"]) == 6


def test_max_images_subsamples_evenly(tmp_path: Path) -> None:
    report = ingest(_lund12(tmp_path), tmp_path / "out", max_images=4, max_side=256)
    assert report["kept"] == ["01.jpg", "05.jpg", "08.jpg", "12.jpg"]
    assert sum("over max_images=4" in r for r in report["rejected"].values()) == 8


def test_no_images_and_one_image_fail_cleanly(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    with pytest.raises(ImageError, match="no usable images") as info:
        ingest(str(empty), tmp_path / "out")
    assert "notes.txt" in str(info.value) and info.value.hint
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(_photos()[0], one)
    with pytest.raises(ImageError, match=r"only 1 usable image.*at least 3"):
        ingest(str(one), tmp_path / "out")
    with pytest.raises(ImageError, match="only 1 usable image"):
        ingest(str(_photos()[0]), tmp_path / "out")  # a single photo as the source
    with pytest.raises(InputError, match="does not exist"):
        ingest(str(tmp_path / "missing"), tmp_path / "out")
    with pytest.raises(InputError, match="unsupported source"):
        ingest("http://example.com/photos", tmp_path / "out")
    assert _listing(tmp_path) == ["empty", "one"]


def test_output_folder_rules(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()  # an empty folder (what KFP may create) is fine
    ingest(_lund12(tmp_path), out, max_images=3, max_side=128)
    assert len(list((out / "images").iterdir())) == 3
    with pytest.raises(OutputExistsError, match="not empty"):
        ingest(_lund12(tmp_path), out, max_images=3, max_side=128)
    report = ingest(_lund12(tmp_path), out, max_images=4, max_side=128, overwrite=True)
    assert sorted(p.name for p in (out / "images").iterdir()) == report["kept"] and len(report["kept"]) == 4
    assert _listing(tmp_path) == ["out"]


# ---------------------------------------------------------------------------- zip archives
def _zip(path: Path, entries: dict[str, bytes], *, symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


def test_zip_of_photos(tmp_path: Path) -> None:
    entries = {f"scan/{p.name}": p.read_bytes() for p in _photos(4)}
    entries["scan\\05.jpg"] = _photos(5)[4].read_bytes()  # Windows separators from an old zip tool
    entries["__MACOSX/scan/._01.jpg"] = b"\0\5\26\7resource fork"
    entries["scan/readme.txt"] = b"hi"
    archive = _zip(tmp_path / "scan.zip", entries)
    report = ingest(f"file://{archive}", tmp_path / "out", max_side=256)
    assert report["source_kind"] == "zip" and report["content"] == "zip"
    assert report["kept"] == [f"scan_{p.name}" for p in _photos(5)]
    assert report["rejected"]["__MACOSX/scan/._01.jpg"] == "hidden or system file"
    assert "not a photo" in report["rejected"]["scan/readme.txt"]
    assert _listing(tmp_path) == ["out", "scan.zip"]
    # a folder (or S3 prefix) that holds just one archive is read through it
    (tmp_path / "upload").mkdir()
    archive.rename(tmp_path / "upload" / "scan.zip")
    report = ingest(str(tmp_path / "upload"), tmp_path / "out2", max_side=256)
    assert (report["source_kind"], report["content"], len(report["kept"])) == ("folder", "zip", 5)


@pytest.mark.parametrize("evil", ["../evil.jpg", "scan/../../evil.jpg", "/etc/evil.jpg", "C:/evil.jpg",
                                  "scan\\..\\..\\evil.jpg"])
def test_zip_slip_refused(tmp_path: Path, evil: str) -> None:
    entries = {f"scan/{p.name}": p.read_bytes() for p in _photos(3)}
    entries[evil] = _photos()[3].read_bytes()
    archive = _zip(tmp_path / "evil.zip", entries)
    with pytest.raises(InputError, match="zip slip") as info:
        ingest(str(archive), tmp_path / "out")
    assert repr(evil) in str(info.value) and info.value.hint
    assert not Path("/etc/evil.jpg").exists()
    assert _listing(tmp_path) == ["evil.zip"]


def test_zip_symlink_encrypted_and_size_limits(tmp_path: Path) -> None:
    entries = {p.name: p.read_bytes() for p in _photos(3)}
    with pytest.raises(InputError, match="symbolic link"):
        ingest(str(_zip(tmp_path / "link.zip", entries, symlink="passwd.jpg")), tmp_path / "out")
    archive = _zip(tmp_path / "ok.zip", entries)
    size = archive.stat().st_size
    with pytest.raises(InputError, match="over the limit"):
        ingest(str(archive), tmp_path / "out", max_archive_bytes=size - 1)
    # a small archive that unpacks to far more than it weighs (a zip bomb)
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.jpg", b"\0" * (20 << 20))
    assert bomb.stat().st_size < 100_000
    with pytest.raises(InputError, match="unpacks to .* zip bomb"):
        ingest(str(bomb), tmp_path / "out", max_archive_bytes=10 << 20)
    encrypted = tmp_path / "enc.zip"
    raw = bytearray(_zip(tmp_path / "plain.zip", {"a.jpg": b"x"}).read_bytes())
    # set the "encrypted" flag bit in the local and central headers
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = raw.index(sig)
        raw[i + off] |= 0x1
    encrypted.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="encrypted"):
        ingest(str(encrypted), tmp_path / "out")
    (tmp_path / "fake.zip").write_bytes(b"PK not a zip")
    with pytest.raises(InputError, match="not a readable zip"):
        ingest(str(tmp_path / "fake.zip"), tmp_path / "out")
    assert not [name for name in _listing(tmp_path) if not name.endswith(".zip")]


def test_cli_ingest_refuses_zip_slip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    archive = _zip(tmp_path / "evil.zip", {"../x.jpg": b"x", **{p.name: p.read_bytes() for p in _photos(3)}})
    assert main(["ingest", str(archive), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "error: archive evil.zip refused" in err and "hint:" in err
    assert main(["ingest", _lund12(tmp_path), str(tmp_path / "out"), "--max-side", "200", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["kept"] == 12


# ---------------------------------------------------------------------------- S3
def test_s3_prefix(tmp_path: Path, s3_server: dict[str, str]) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server["endpoint"], region_name=s3_server["region"])
    for p in _photos(4):
        s3.upload_file(str(p), s3_server["bucket"], f"scenes/lund/{p.name}")
    s3.put_object(Bucket=s3_server["bucket"], Key="scenes/lund-other/99.jpg", Body=_photos()[5].read_bytes())
    report = ingest(f"s3://{s3_server['bucket']}/scenes/lund", tmp_path / "out", max_side=300)
    assert report["source_kind"] == "s3" and report["content"] == "photos"
    assert report["kept"] == [p.name for p in _photos(4)]  # the sibling prefix lund-other is not included
    # a zip object as the source
    archive = _zip(tmp_path / "scan.zip", {p.name: p.read_bytes() for p in _photos(3)})
    s3.upload_file(str(archive), s3_server["bucket"], "zips/scan.zip")
    report = ingest(f"s3://{s3_server['bucket']}/zips/scan.zip", tmp_path / "out2", max_side=300)
    assert (report["source_kind"], report["content"], len(report["kept"])) == ("s3", "zip", 3)
    with pytest.raises(InputError, match="over the limit"):  # refused before downloading
        ingest(f"s3://{s3_server['bucket']}/zips/scan.zip", tmp_path / "out3", max_archive_bytes=1000)
    assert _listing(tmp_path) == ["out", "out2", "scan.zip"]


def test_s3_missing_prefix_and_bucket(tmp_path: Path, s3_server: dict[str, str],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A prefix with nothing under it is the user's input (InputError, exit 2); a missing bucket is the storage's
    setup (StorageError, exit 3)."""
    with pytest.raises(InputError, match="nothing under .*no/such/prefix: the prefix is empty or does not exist"):
        ingest(f"s3://{s3_server['bucket']}/no/such/prefix", tmp_path / "out")
    assert main(["ingest", f"s3://{s3_server['bucket']}/no/such/prefix", str(tmp_path / "out")]) == 2
    assert "hint: check the prefix" in capsys.readouterr().err
    with pytest.raises(StorageError) as info:
        ingest("s3://no-such-bucket-splatflow/photos", tmp_path / "out")
    assert "no-such-bucket-splatflow" in str(info.value) and "testing-secret-key" not in str(info.value)
    assert info.value.exit_code == 3
    assert _listing(tmp_path) == []


def test_s3_prefix_downloads_only_photos_videos_and_zips(tmp_path: Path, s3_server: dict[str, str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Other objects under the prefix are listed, reported as rejected and never downloaded."""
    import boto3

    from splatflow import storage

    s3 = boto3.client("s3", endpoint_url=s3_server["endpoint"], region_name=s3_server["region"])
    bucket, prefix = s3_server["bucket"], "mixed/scene"
    for p in _photos(3):
        s3.upload_file(str(p), bucket, f"{prefix}/{p.name}")
    s3.put_object(Bucket=bucket, Key=f"{prefix}/model.ply", Body=b"ply\n" + b"\0" * 5000)
    s3.put_object(Bucket=bucket, Key=f"{prefix}/notes/readme.txt", Body=b"hello")
    downloaded: list[str] = []
    real = storage.download
    monkeypatch.setattr(storage, "download", lambda uri, dest: downloaded.append(uri) or real(uri, dest))
    report = ingest(f"s3://{bucket}/{prefix}", tmp_path / "out", max_side=200)
    assert report["kept"] == [p.name for p in _photos(3)]
    assert report["rejected"] == {"model.ply": "not a photo, video or zip (not downloaded)",
                                  "notes/readme.txt": "not a photo, video or zip (not downloaded)"}
    assert sorted(PurePosixPath(u).name for u in downloaded) == [p.name for p in _photos(3)]


def test_s3_prefix_limits_are_checked_before_downloading(tmp_path: Path, s3_server: dict[str, str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    from splatflow import storage
    from splatflow.stages import ingest as ingest_mod

    s3 = boto3.client("s3", endpoint_url=s3_server["endpoint"], region_name=s3_server["region"])
    bucket = s3_server["bucket"]
    photos = _photos(3)
    for p in photos:
        s3.upload_file(str(p), bucket, f"limits/big/{p.name}")
    s3.put_object(Bucket=bucket, Key="limits/none/a.txt", Body=b"a")
    s3.put_object(Bucket=bucket, Key="limits/none/b.csv", Body=b"b")
    monkeypatch.setattr(storage, "download", lambda *a, **k: pytest.fail("nothing may be downloaded"))
    total = sum(p.stat().st_size for p in photos)
    with pytest.raises(InputError, match=f"the 3 photos/videos/zips under .* total {total:,} bytes, over the limit"):
        ingest(f"s3://{bucket}/limits/big", tmp_path / "out", max_archive_bytes=total - 1)
    with pytest.raises(InputError, match=r"no photos, videos or zips under .*\(2 other object\(s\): a.txt, b.csv\)"):
        ingest(f"s3://{bucket}/limits/none", tmp_path / "out")
    monkeypatch.setattr(ingest_mod, "MAX_ARCHIVE_ENTRIES", 2)
    with pytest.raises(InputError, match="holds more than 2 objects") as info:
        ingest(f"s3://{bucket}/limits/big", tmp_path / "out")
    assert info.value.exit_code == 2 and info.value.hint
    assert _listing(tmp_path) == []


def test_failed_run_leaves_no_parent_folders(tmp_path: Path) -> None:
    """The output's parent folders are created for the run and removed again when it fails; folders that were
    already there, and what others write into new ones meanwhile, stay."""
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    with pytest.raises(ImageError, match="no usable images"):
        ingest(str(empty), tmp_path / "runs" / "r1" / "ingest" / "out")
    assert _listing(tmp_path) == ["empty"]
    (tmp_path / "runs").mkdir()
    with pytest.raises(ImageError):
        ingest(str(empty), tmp_path / "runs" / "r2" / "out")
    assert _listing(tmp_path / "runs") == []
    report = ingest(_lund12(tmp_path), tmp_path / "runs" / "r3" / "out", max_images=3, max_side=128)
    assert (tmp_path / "runs" / "r3" / "out" / "ingest-report.json").exists() and len(report["kept"]) == 3
