"""PLY I/O: bit-exact round trips on real files, every layout variant, and each bad-input case."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from splatflow.errors import InvalidValuesError, PlyError
from splatflow.gaussians import GaussianCloud
from splatflow.io.ply import read_ply, write_ply


def _cloud(n: int = 50, degree: int = 3, seed: int = 0) -> GaussianCloud:
    rng = np.random.default_rng(seed)
    k = {0: 0, 1: 3, 2: 8, 3: 15}[degree]
    return GaussianCloud(
        means=rng.normal(size=(n, 3)).astype(np.float32),
        scales=rng.normal(-4, 1, size=(n, 3)).astype(np.float32),
        quats=rng.normal(size=(n, 4)).astype(np.float32),
        opacities=rng.normal(size=n).astype(np.float32),
        sh0=rng.normal(size=(n, 3)).astype(np.float32),
        shN=rng.normal(0, 0.1, size=(n, k, 3)).astype(np.float32),
    )


def test_round_trip_is_bit_exact_on_every_real_file(splat_paths: dict[str, Path], tmp_path: Path) -> None:
    assert {"guitar", "fruit_drops_minimal"} <= set(splat_paths)
    for name, path in splat_paths.items():
        cloud = read_ply(path)
        out = write_ply(cloud, tmp_path / f"{name}.ply", layout="source")
        assert out.read_bytes() == path.read_bytes(), name


def test_inria_layout_round_trip_keeps_values(splat_paths: dict[str, Path], tmp_path: Path) -> None:
    cloud = read_ply(splat_paths["fruit_drops_minimal"])
    assert cloud.sh_degree == 3 and cloud.shN.shape == (4721, 15, 3)
    assert list(cloud.extras) == ["nx", "ny", "nz", "transform"]
    write_ply(cloud, tmp_path / "a.ply")
    again = read_ply(tmp_path / "a.ply")
    for key, arr in cloud.core_arrays.items():
        np.testing.assert_array_equal(arr, getattr(again, key), err_msg=key)
    header = (tmp_path / "a.ply").read_bytes()[:2000].split(b"end_header")[0].decode()
    props = [ln.split()[-1] for ln in header.splitlines() if ln.startswith("property")]
    assert props[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert props[-8:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert "transform" not in props  # INRIA layout drops extras unless asked


def test_f_rest_is_channel_major(tmp_path: Path) -> None:
    cloud = _cloud(4, degree=1)
    write_ply(cloud, tmp_path / "c.ply")
    from plyfile import PlyData

    v = PlyData.read(str(tmp_path / "c.ply"))["vertex"]
    # f_rest_0..2 are the three red coefficients, f_rest_3..5 green, f_rest_6..8 blue
    np.testing.assert_array_equal(v["f_rest_1"], cloud.shN[:, 1, 0])
    np.testing.assert_array_equal(v["f_rest_3"], cloud.shN[:, 0, 1])
    np.testing.assert_array_equal(v["f_rest_8"], cloud.shN[:, 2, 2])


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_every_sh_degree_ascii_and_binary(degree: int, tmp_path: Path) -> None:
    cloud = _cloud(20, degree)
    for ascii_ in (False, True):
        p = write_ply(cloud, tmp_path / f"d{degree}{ascii_}.ply", ascii=ascii_)
        back = read_ply(p)
        assert back.sh_degree == degree
        np.testing.assert_allclose(back.shN, cloud.shN, rtol=1e-6)
        np.testing.assert_allclose(back.means, cloud.means, rtol=1e-6)


def test_extra_properties_are_kept_not_errors(tmp_path: Path) -> None:
    cloud = _cloud(10, 0)
    cloud.extras["confidence"] = np.arange(10, dtype=np.float32)
    cloud.extras["label"] = np.arange(10, dtype=np.uint8)
    p = write_ply(cloud, tmp_path / "e.ply", keep_extras=True)
    back = read_ply(p)
    np.testing.assert_array_equal(back.extras["label"], np.arange(10))
    assert back.extras["label"].dtype == np.uint8


def _raw_ply(tmp_path: Path, header_props: list[str], n: int, payload: bytes | None = None,
             element: str = "vertex") -> Path:
    head = f"ply\nformat binary_little_endian 1.0\nelement {element} {n}\n"
    head += "".join(f"property float {p}\n" for p in header_props) + "end_header\n"
    count = n * len(header_props)
    body = payload if payload is not None else struct.pack(f"<{count}f", *([0.5] * count))
    p = tmp_path / "bad.ply"
    p.write_bytes(head.encode() + body)
    return p


BASE = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
        "rot_0", "rot_1", "rot_2", "rot_3"]


def test_not_a_ply(tmp_path: Path) -> None:
    p = tmp_path / "x.ply"
    p.write_bytes(b"\x89PNG\r\n\x1a\n not a ply")
    with pytest.raises(PlyError, match="not a PLY file"):
        read_ply(p)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PlyError, match="no such file"):
        read_ply(tmp_path / "nope.ply")


def test_truncated(tmp_path: Path) -> None:
    p = _raw_ply(tmp_path, BASE, 100, payload=b"\0" * (4 * len(BASE) * 60))
    with pytest.raises(PlyError, match="truncated"):
        read_ply(p)


def test_no_vertex_element(tmp_path: Path) -> None:
    p = _raw_ply(tmp_path, BASE, 3, element="face")
    with pytest.raises(PlyError, match="no 'vertex' element"):
        read_ply(p)


def test_missing_required_properties(tmp_path: Path) -> None:
    p = _raw_ply(tmp_path, [q for q in BASE if q not in ("opacity", "rot_3")], 3)
    with pytest.raises(PlyError, match="missing the 3DGS properties opacity, rot_3"):
        read_ply(p)


def test_wrong_f_rest_count(tmp_path: Path) -> None:
    p = _raw_ply(tmp_path, BASE + [f"f_rest_{i}" for i in range(10)], 3)
    with pytest.raises(PlyError, match="10 f_rest properties"):
        read_ply(p)


def test_zero_splats(tmp_path: Path) -> None:
    p = _raw_ply(tmp_path, BASE, 0)
    with pytest.raises(PlyError, match="zero splats"):
        read_ply(p)


def test_nan_inf_reported_and_dropped_only_on_request(tmp_path: Path) -> None:
    cloud = _cloud(30, 1)
    cloud.means[3, 0] = np.nan
    cloud.scales[7, 2] = np.inf
    cloud.shN[9, 1, 1] = -np.inf
    p = write_ply(cloud, tmp_path / "nan.ply")
    kept = read_ply(p)
    assert len(kept) == 30 and int(kept.invalid_mask().sum()) == 3
    with pytest.raises(InvalidValuesError, match="3 of 30 splats have NaN or Inf") as exc:
        read_ply(p, on_invalid="error")
    assert exc.value.count == 3 and "--drop-invalid" in str(exc.value)
    dropped = read_ply(p, on_invalid="drop")
    assert len(dropped) == 27 and not dropped.invalid_mask().any()


def test_write_is_atomic_on_failure(tmp_path: Path) -> None:
    cloud = _cloud(5, 0)
    cloud.layout = ("x", "y", "z", "nonexistent")
    with pytest.raises(PlyError):
        write_ply(cloud, tmp_path / "out.ply", layout="source")
    assert list(tmp_path.iterdir()) == []
