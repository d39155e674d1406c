"""KFP component: structure from motion (pycolmap) on the ingested images -> a Dataset with the sparse model."""

# no `from __future__ import annotations`: kfp reads the real annotation objects (Input[Model] ...)
from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from splatflow.spec import image_for


@dsl.component(base_image=image_for("sfm"), install_kfp_package=False)
def sfm(images: Input[Dataset], quality: str, output_uri: str, sfm_model: Output[Dataset]) -> dict:
    """COLMAP model in ``sfm_model.path/sparse/0`` + undistorted images; returns the registration report."""
    from pathlib import Path

    from splatflow.presets import preset
    from splatflow.stages.sfm import sfm as run_sfm
    from splatflow.tasks import record_failure, task_output

    with record_failure("sfm", output_uri):
        report = run_sfm(Path(images.path) / "images", Path(sfm_model.path), max_side=preset(quality)["max_side"])
    sfm_model.metadata.update(task_output({"registered": report.get("registered")}))
    return task_output(report)
