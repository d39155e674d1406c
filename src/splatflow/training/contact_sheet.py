"""A contact sheet of a training run: each held-out photo beside the trained splats' render of the same view.

People judge a scene by looking at it; a PSNR says little about whether a held-out view shows the street or
fog. :func:`write_contact_sheet` writes one PNG, a row per view: the photo, the render, and a caption with the
view's name and PSNR.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["SheetRow", "write_contact_sheet"]

CELL = 320
"""Longest side of each picture on the sheet, in pixels."""
CAPTION = 18
"""Height of a row's caption strip, in pixels."""


@dataclass
class SheetRow:
    """One view: ``photo`` and ``render`` (H, W, 3) float in [0, 1], its ``name`` and the render's ``psnr``."""

    name: str
    photo: np.ndarray
    render: np.ndarray
    psnr: float | None = None


def _to_image(a: np.ndarray, size: tuple[int, int]):  # -> PIL.Image.Image
    from PIL import Image

    img = Image.fromarray((np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8))
    return img.resize(size, Image.Resampling.LANCZOS) if img.size != size else img


def write_contact_sheet(rows: list[SheetRow], path: Path, *, title: str = "") -> Path:
    """Write the sheet to ``path`` (PNG): a row per view, photo left, render right; returns ``path``."""
    from PIL import Image, ImageDraw

    if not rows:
        raise ValueError("a contact sheet needs at least one view")
    h0, w0 = rows[0].photo.shape[:2]
    scale = CELL / max(h0, w0)
    cw, ch = max(1, round(w0 * scale)), max(1, round(h0 * scale))
    top = CAPTION if title else 0
    sheet = Image.new("RGB", (2 * cw + 3, top + len(rows) * (ch + CAPTION)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((4, 3), title, fill=(235, 235, 235))
    for i, row in enumerate(rows):
        y = top + i * (ch + CAPTION)
        psnr = f", render PSNR {row.psnr:.2f} dB" if row.psnr is not None else ""
        draw.text((4, y + 3), f"{row.name}: photo | render{psnr}", fill=(235, 235, 235))
        sheet.paste(_to_image(row.photo, (cw, ch)), (0, y + CAPTION))
        sheet.paste(_to_image(row.render, (cw, ch)), (cw + 3, y + CAPTION))
    path = Path(path)
    sheet.save(path, format="PNG", optimize=True)
    return path
