"""Training's contact sheet is published next to the viewer page, checked to be a PNG first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from splatflow.errors import InputError
from splatflow.stages.publish import CONTACT_SHEET, publish, published_files, read_manifest
from splatflow.training.contact_sheet import SheetRow, write_contact_sheet


def _sheet(path: Path) -> Path:
    photo = np.linspace(0, 1, 24 * 32 * 3, dtype=np.float32).reshape(24, 32, 3)
    return write_contact_sheet([SheetRow("v1.jpg", photo, photo[::-1], 21.5)], path, title="held-out views")


def test_the_contact_sheet_lands_beside_the_viewer_page(sample_sog: Path, tmp_path: Path) -> None:
    sheet = _sheet(tmp_path / "sheet.png")
    with Image.open(sheet) as img:
        assert img.format == "PNG" and img.size == (2 * 320 + 3, 18 + 240 + 18)
    out = tmp_path / "out"
    result = publish(str(out), scene="s", run_id="r1", files={"sog": sample_sog, "contact_sheet": sheet},
                     reports={})
    published = out / "s" / "r1"
    assert (published / CONTACT_SHEET).read_bytes() == sheet.read_bytes()
    assert (published / "index.html").is_file()
    manifest = read_manifest(str(out), "s", "r1")
    assert manifest is not None and result["manifest_uri"].endswith("manifest.json")
    assert manifest["objects"][CONTACT_SHEET]["content_type"] == "image/png"


def test_a_contact_sheet_that_is_not_a_png_is_refused(sample_sog: Path, tmp_path: Path) -> None:
    fake = tmp_path / "sheet.png"
    fake.write_bytes(b"\xff\xd8\xff\xe0 not a png")
    with pytest.raises(InputError, match="is not a PNG contact sheet"):
        publish(str(tmp_path / "out"), scene="s", run_id="r1", files={"sog": sample_sog, "contact_sheet": fake},
                reports={})
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.png"))


def test_the_pipeline_publishes_the_sheet_only_when_training_wrote_one(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    assert published_files(tmp_path / "sog", model) == {"sog": tmp_path / "sog" / "splats.sog"}
    _sheet(model / CONTACT_SHEET)
    assert published_files(tmp_path / "sog", model)["contact_sheet"] == model / CONTACT_SHEET


def test_the_viewer_opens_at_the_capture_pose_training_reports(sample_sog: Path, tmp_path: Path) -> None:
    import json

    pose = {"position": [1.0, 2.0, 3.0], "target": [1.5, 2.0, 7.0]}
    out = tmp_path / "out"
    publish(str(out), scene="s", run_id="r1", files={"sog": sample_sog}, reports={"train": {"viewer_camera": pose}})
    camera = json.loads((out / "s" / "r1" / "settings.json").read_text())["cameras"][0]["initial"]
    assert camera["position"] == [-1.0, -2.0, 3.0] and camera["target"] == [-1.5, -2.0, 7.0]  # the viewer's axes
    publish(str(out), scene="s", run_id="r2", files={"sog": sample_sog}, reports={})
    fitted = json.loads((out / "s" / "r2" / "settings.json").read_text())["cameras"][0]["initial"]
    assert fitted["position"] != camera["position"]  # without a pose: framed from outside, as before
