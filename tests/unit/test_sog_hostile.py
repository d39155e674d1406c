"""Hostile SOG files: every read bounded before it happens, every image header checked against meta.json's count
before decoding. `info` and `decompress` answer each with one error line, exit 2, no traceback, no output.

The huge images are real WebP files made in microseconds: a constant lossless (VP8L) image codes the same bytes
at any size, so only the 14-bit width/height fields of its header change (Pillow decodes them: checked below)."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from splatflow.cli import main
from splatflow.errors import SogError
from splatflow.sog.bundle import MAX_META_BYTES, read_files
from splatflow.sog.decode import LARGE_SET, image_data_bytes, read_sog

V2_FILES = ["means_l.webp", "means_u.webp", "scales.webp", "quats.webp", "sh0.webp"]
CODEBOOK = [i / 255 for i in range(256)]


def constant_webp(width: int, height: int) -> bytes:
    """A lossless WebP of width x height opaque black texels, 34 bytes whatever its size."""
    bits = (width - 1) | ((height - 1) << 14) | (1 << 28)
    vp8l = b"\x2f" + struct.pack("<I", bits) + bytes.fromhex("071011fd0f4444ff03")
    chunk = b"VP8L" + struct.pack("<I", len(vp8l)) + vp8l + b"\0" * (len(vp8l) % 2)
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def v2_meta(count: Any, sh: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "version": 2, "count": count,
        "means": {"mins": [0, 0, 0], "maxs": [1, 1, 1], "files": V2_FILES[:2]},
        "scales": {"codebook": CODEBOOK, "files": ["scales.webp"]}, "quats": {"files": ["quats.webp"]},
        "sh0": {"codebook": CODEBOOK, "files": ["sh0.webp"]}}
    if sh:
        meta["shN"] = {"count": 64, "bands": 3, "codebook": CODEBOOK,
                       "files": ["shN_centroids.webp", "shN_labels.webp"]}
    return meta


def write_sog(path: Path, meta: dict[str, Any] | bytes, images: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("meta.json", meta if isinstance(meta, bytes) else json.dumps(meta))
        for name, data in images.items():
            zf.writestr(name, data)
    return path


def _patch_declared_size(path: Path, member: str, size: int) -> None:
    """Make the ZIP's central directory declare ``size`` uncompressed bytes for ``member`` (the data stays)."""
    data = bytearray(path.read_bytes())
    eocd = data.rfind(b"PK\x05\x06")
    entries, at = struct.unpack_from("<H", data, eocd + 10)[0], struct.unpack_from("<I", data, eocd + 16)[0]
    for _ in range(entries):
        assert data[at:at + 4] == b"PK\x01\x02"
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, at + 28)
        if data[at + 46: at + 46 + name_len] == member.encode():
            struct.pack_into("<I", data, at + 24, size)
            path.write_bytes(bytes(data))
            return
        at += 46 + name_len + extra_len + comment_len
    raise AssertionError(f"{member} not found")


def _refused(args: list[str], capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    """Run the CLI: exit 2, one error line naming the problem (+ hint), no traceback."""
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines[0].startswith("error: ") and all(n in lines[0] for n in needles), err
    assert len(lines) <= 2 and "Traceback" not in err
    return lines[0]


@pytest.fixture
def out_ply(tmp_path: Path) -> Path:
    return tmp_path / "out" / "back.ply"


def _both(path: Path, out_ply: Path, capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    """`info` and `decompress` both refuse ``path``; decompress leaves nothing behind."""
    out_ply.parent.mkdir(exist_ok=True)
    _refused(["info", str(path)], capsys, *needles)
    _refused(["decompress", str(path), str(out_ply)], capsys, *needles)
    assert list(out_ply.parent.iterdir()) == []


def test_the_constant_webp_is_a_real_image() -> None:
    img = np.asarray(Image.open(io.BytesIO(constant_webp(37, 11))).convert("RGBA"))
    assert img.shape == (11, 37, 4) and (img == [0, 0, 0, 255]).all()
    with pytest.warns(Image.DecompressionBombWarning):  # Pillow itself only warns at this size, and decodes
        assert Image.open(io.BytesIO(constant_webp(12000, 12000))).size == (12000, 12000)


def test_huge_images_for_few_splats_are_refused_before_decoding(tmp_path: Path, out_ply: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's bomb: five 12000x12000 WebPs (5.7 GB decoded) in a 1 KB .sog declaring 4 splats."""
    bomb = write_sog(tmp_path / "bomb.sog", v2_meta(4), {n: constant_webp(12000, 12000) for n in V2_FILES})
    assert bomb.stat().st_size < 16 << 10  # the codebooks in meta.json are most of it
    _both(bomb, out_ply, capsys, "12000x12000", "4 splats")


def test_the_largest_webp_and_oversized_centroids_are_refused(tmp_path: Path, out_ply: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    images = {n: constant_webp(4, 4) for n in V2_FILES} | {"shN_labels.webp": constant_webp(4, 4)}
    big = write_sog(tmp_path / "c.sog", v2_meta(16, sh=True), images | {"shN_centroids.webp": constant_webp(960, 9000)})
    _both(big, out_ply, capsys, "shN_centroids.webp is 960x9000")
    # over Pillow's own bomb limit (178 M texels): still one clear line
    huge = write_sog(tmp_path / "h.sog", v2_meta(16), images | {"sh0.webp": constant_webp(16383, 16383)})
    _both(huge, out_ply, capsys, "sh0.webp")


def test_a_small_file_declaring_millions_of_splats_is_refused(tmp_path: Path, out_ply: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    n = 2_000_000
    side = 1420  # 2,016,400 texels: the images fit the count exactly, they are just empty
    bomb = write_sog(tmp_path / "m.sog", v2_meta(n), {name: constant_webp(side, side) for name in V2_FILES})
    _both(bomb, out_ply, capsys, "2,000,000 splats", "bytes per splat")
    # up to LARGE_SET splats a set is decoded whatever its size (bounded: see bench/results/hostile-sog.md)
    side = 16
    small = write_sog(tmp_path / "s.sog", v2_meta(side * side), {name: constant_webp(side, side) for name in V2_FILES})
    cloud, _, kind = read_sog(small)
    assert len(cloud) == side * side <= LARGE_SET and kind == "sog-v2"


def test_members_and_meta_declaring_huge_sizes(tmp_path: Path, out_ply: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    images = {n: constant_webp(4, 4) for n in V2_FILES}
    member = write_sog(tmp_path / "member.sog", v2_meta(16), images)
    _patch_declared_size(member, "quats.webp", 1 << 30)  # a 1 GiB member: refused before it is read
    _both(member, out_ply, capsys, "quats.webp declares 1,073,741,824 bytes")
    meta = write_sog(tmp_path / "meta.sog", v2_meta(16), images)
    _patch_declared_size(meta, "meta.json", 1 << 30)
    _both(meta, out_ply, capsys, "meta.json", "1,073,741,824 bytes")
    # a 1 GiB meta.json in a folder (sparse: costs no disk) is refused by its size, never read
    folder = tmp_path / "folder"
    folder.mkdir()
    with open(folder / "meta.json", "wb") as f:
        f.write(b"{")
        f.truncate(1 << 30)
    _both(folder, out_ply, capsys, f"{MAX_META_BYTES:,} accepted")
    # a folder whose image is far larger than its splats can need is refused by its size too
    (folder / "meta.json").write_text(json.dumps(v2_meta(16)))
    for name in V2_FILES:
        (folder / name).write_bytes(constant_webp(4, 4))
    with open(folder / "sh0.webp", "ab") as f:
        f.truncate(64 << 20)
    with pytest.raises(SogError, match="sh0.webp"):
        read_files(folder)


def test_too_many_members(tmp_path: Path, out_ply: Path, capsys: pytest.CaptureFixture[str]) -> None:
    images = {n: constant_webp(4, 4) for n in V2_FILES} | {f"x{i}.bin": b"" for i in range(100)}
    _both(write_sog(tmp_path / "many.sog", v2_meta(16), images), out_ply, capsys, "106 entries")


@pytest.mark.parametrize(("meta", "needle"), [
    (b"[" * 200_000 + b"]" * 200_000, "levels deep"),
    (json.dumps({"version": 2, "count": 4, "means": {"files": []}, "scales": {"files": []},
                 "quats": {"files": []}, "sh0": {"files": []}}).encode(), "'means' names 0 files"),
    (json.dumps(v2_meta("4")).encode(), "not a whole number"),
    (json.dumps(v2_meta(True)).encode(), "not a whole number"),
    (json.dumps(v2_meta(4.5)).encode(), "not a whole number"),
    (json.dumps(v2_meta(10**12)).encode(), "more than a SOG can hold"),
    (json.dumps({**v2_meta(16), "scales": {"files": ["scales.webp"]}}).encode(), "meta.json"),  # no codebook
    (json.dumps({**v2_meta(16), "means": {"files": V2_FILES[:2]}}).encode(), "meta.json"),      # no mins/maxs
    (json.dumps({**v2_meta(16), "quats": {"files": ["../quats.webp"]}}).encode(), "unsafe file path"),
    (b'{"version": 2, "count": NaN}', "not valid JSON"),
    (b'{"version": "\xff"}', "not UTF-8"),
])
def test_damaged_meta_json(tmp_path: Path, out_ply: Path, capsys: pytest.CaptureFixture[str], meta: bytes,
                           needle: str) -> None:
    images = {n: constant_webp(4, 4) for n in V2_FILES}
    _both(write_sog(tmp_path / "d.sog", meta, images), out_ply, capsys, needle)
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "meta.json").write_bytes(meta)
    for name, data in images.items():
        (folder / name).write_bytes(data)
    _both(folder / "meta.json", out_ply, capsys, needle)


def test_textures_that_are_not_single_webp_images(tmp_path: Path, out_ply: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    png = io.BytesIO()
    Image.new("RGBA", (4, 4)).save(png, "PNG")
    images = {n: constant_webp(4, 4) for n in V2_FILES}
    _both(write_sog(tmp_path / "p.sog", v2_meta(16), images | {"quats.webp": png.getvalue()}), out_ply, capsys,
          "quats.webp is a PNG image")
    anim = io.BytesIO()
    frames = [Image.new("RGBA", (4, 4), (i, 0, 0, 255)) for i in range(3)]
    frames[0].save(anim, "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    _both(write_sog(tmp_path / "a.sog", v2_meta(16), images | {"sh0.webp": anim.getvalue()}), out_ply, capsys,
          "animated WebP")
    _both(write_sog(tmp_path / "t.sog", v2_meta(16), images | {"sh0.webp": b"RIFF\0\0\0\0WEBPjunk"}), out_ply,
          capsys, "sh0.webp is not a readable image")
    _both(write_sog(tmp_path / "few.sog", v2_meta(17), images), out_ply, capsys, "16 texels for 17 splats")


def test_files_that_are_not_sog_name_what_they_are(tmp_path: Path, out_ply: Path, data_dir: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    jpeg = data_dir / "photos" / "lund" / "01.jpg"
    out_ply.parent.mkdir()
    _refused(["decompress", str(jpeg), str(out_ply)], capsys, "01.jpg is a JPEG image, not a SOG")
    _refused(["info", str(jpeg)], capsys, "01.jpg: unknown splat file type")
    assert list(out_ply.parent.iterdir()) == []
    fake = tmp_path / "fake.sog"
    fake.write_bytes(b"random bytes, not a zip" * 10)
    _both(fake, out_ply, capsys, "is not a .sog bundle (not a ZIP file)")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    _refused(["decompress", str(text), str(out_ply)], capsys, "notes.txt is text, not a SOG")
    assert list(out_ply.parent.iterdir()) == []


def test_real_sog_files_hold_their_image_data(data_dir: Path, sample_sog: Path) -> None:
    """The bomb rule counts only image chunks: for real files that is nearly every byte (10+ bytes per splat)."""
    folder = data_dir / "sog-reference" / "playbot-lod3-v2"
    meta = json.loads((folder / "meta.json").read_text())
    webps = list(folder.glob("*.webp"))
    data = sum(image_data_bytes(p.read_bytes()) for p in webps)
    assert 0.99 * sum(p.stat().st_size for p in webps) < data < sum(p.stat().st_size for p in webps)
    assert data / meta["count"] > 10
    meta, blobs, _ = read_files(sample_sog)
    assert sum(image_data_bytes(b) for b in blobs.values()) / meta["count"] > 10
    assert read_sog(sample_sog)[2] == "sog-v2"
