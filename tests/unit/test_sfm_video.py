"""A short video made here from the sample photos (PyAV) is ingested to frames (blurred and duplicate frames
rejected) and reconstructed with sequential matching."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from splatflow.cli import main
from splatflow.errors import ImageError
from splatflow.stages.ingest import ingest

av = pytest.importorskip("av")
PHOTOS = Path(__file__).resolve().parents[2] / "data" / "photos" / "lund"
REPEAT = 3  # each photo is held for this many frames: the copies are near-duplicates
BLURRED = (3, 1)  # (photo index, copy) replaced by a blurred frame


def write_video(path: Path, frames: list[Image.Image], *, fps: int = 6, codec: str = "libx264") -> Path:
    """Encode RGB images (all the same even size) as an H.264 MP4 at high quality."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "16"}
        for im in frames:
            for packet in stream.encode(av.VideoFrame.from_image(im)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _photo_frames(n: int, size: tuple[int, int]) -> list[Image.Image]:
    frames = []
    for i, p in enumerate(sorted(PHOTOS.glob("*.jpg"))[:n]):
        with Image.open(p) as im:
            im = im.convert("RGB").resize(size, Image.Resampling.LANCZOS)
        for copy in range(REPEAT):
            frames.append(im.filter(ImageFilter.GaussianBlur(5)) if (i, copy) == BLURRED else im)
    return frames


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "walk.mp4", _photo_frames(8, (640, 480)))


def test_video_every_frame_rejects_blur_and_duplicates(video: Path, tmp_path: Path) -> None:
    report = ingest(str(video), tmp_path / "out", video_frames=8 * REPEAT, max_side=640)
    assert report["source_kind"] == "video" and report["content"] == "video"
    # one frame per photo survives: the first copy of each (the blurred copy of photo 3 is never chosen)
    assert report["kept"] == [f"frame_{i * REPEAT:06d}.jpg" for i in range(8)]
    blurred = f"frame_{BLURRED[0] * REPEAT + BLURRED[1]:06d}.jpg"
    assert report["rejected"][blurred].startswith("blurred")
    dups = [k for k, v in report["rejected"].items() if v.startswith("near-duplicate")]
    assert len(dups) == 8 * REPEAT - 8 - 1
    assert report["rejected"]["frame_000001.jpg"].startswith("near-duplicate of frame_000000.jpg")
    with Image.open(tmp_path / "out" / "images" / "frame_000000.jpg") as im:
        assert im.size == (640, 480)
        got = np.asarray(im, dtype=np.float32)
    with Image.open(sorted(PHOTOS.glob("*.jpg"))[0]) as im:
        want = np.asarray(im.convert("RGB").resize((640, 480), Image.Resampling.LANCZOS), dtype=np.float32)
    assert np.abs(got - want).mean() < 6.0  # the frame is the photo, through H.264


def test_video_slots_pick_the_sharpest_frame(video: Path, tmp_path: Path) -> None:
    report = ingest(str(video), tmp_path / "out", video_frames=8, max_side=320)
    assert len(report["kept"]) == 8 and report["rejected"] == {}
    blurred_index = BLURRED[0] * REPEAT + BLURRED[1]
    assert f"frame_{blurred_index:06d}.jpg" not in report["kept"]
    with Image.open(tmp_path / "out" / "images" / report["kept"][0]) as im:
        assert max(im.size) == 320


def test_video_without_frames_or_undecodable(tmp_path: Path) -> None:
    (tmp_path / "broken.mp4").write_bytes(b"\0\0\0\x18ftypmp42 not a real video")
    with pytest.raises(ImageError, match="cannot be decoded"):
        ingest(str(tmp_path / "broken.mp4"), tmp_path / "out")
    # a video of one still picture: all frames but one are duplicates -> too few images
    still = write_video(tmp_path / "still.mp4", _photo_frames(1, (320, 240)) * 4)
    with pytest.raises(ImageError, match="only 1 usable image"):
        ingest(str(still), tmp_path / "out", video_frames=12)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.mp4", "still.mp4"]


def test_video_reconstructed(video: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pycolmap")
    ingest(str(video), tmp_path / "frames", video_frames=8 * REPEAT, max_side=640)
    # through the CLI: `splatflow sfm FRAMES OUT`
    assert main(["sfm", str(tmp_path / "frames"), str(tmp_path / "sfm"), "--max-side", "640",
                 "--max-features", "4096"]) == 0
    report = json.loads((tmp_path / "sfm" / "sfm-report.json").read_text())
    printed = capsys.readouterr().out
    assert f"registered {report['registered']}/8 images (sequential matching)" in printed
    assert report["matcher"] == "sequential"  # video frames
    assert report["total"] == 8 and report["registered"] >= 7, report
    assert report["points"] > 200 and report["mean_reprojection_error"] < 2.0
    assert sorted(p.name for p in (tmp_path / "sfm" / "images").iterdir()) == sorted(
        n for n in (f"frame_{i * REPEAT:06d}.jpg" for i in range(8)) if n not in report["unregistered"])


def test_video_without_a_frame_count_in_its_header(tmp_path: Path) -> None:
    mkv = write_video(tmp_path / "walk.mkv", _photo_frames(4, (320, 240)))
    with av.open(str(mkv)) as container:
        assert container.streams.video[0].frames == 0  # Matroska: frames are counted by demuxing
    report = ingest(str(mkv), tmp_path / "out", video_frames=4 * REPEAT, max_side=320)
    assert report["kept"] == [f"frame_{i * REPEAT:06d}.jpg" for i in range(4)]


def test_phone_video_rotation_is_applied(tmp_path: Path) -> None:
    frames = []
    for im in _photo_frames(3, (320, 240))[::REPEAT]:
        im = im.copy()
        im.paste((255, 0, 0), (0, 0, 40, 40))  # a red marker in the stored frame's top-left corner
        frames.append(im)
    path = tmp_path / "portrait.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=2)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.set_display_rotation(-90)  # what phones write for portrait video: show it turned 90 degrees clockwise
        for im in frames:
            for packet in stream.encode(av.VideoFrame.from_image(im)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    report = ingest(str(path), tmp_path / "out", video_frames=3, max_side=320)
    assert len(report["kept"]) == 3
    with Image.open(tmp_path / "out" / "images" / report["kept"][0]) as im:
        assert im.size == (240, 320)  # upright portrait
        px = np.asarray(im, dtype=np.float32)
    red = np.array([255.0, 0.0, 0.0])
    assert np.abs(px[5:35, -35:-5] - red).mean() < 40  # turned clockwise: the marker is now top-right
    assert np.abs(px[5:35, 5:35] - red).mean() > 100
