"""KFP component: train 3D Gaussian splats on the SfM model (GPU; a retry resumes from the checkpoint it finds)."""

# no `from __future__ import annotations`: kfp reads the real annotation objects (Input[Model] ...)
from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from splatflow.spec import image_for


@dsl.component(base_image=image_for("train"), install_kfp_package=False)
def train(sfm_model: Input[Dataset], quality: str, iterations: int, max_splats: int, sh_degree: int,
          output_uri: str, model: Output[Model]) -> dict:
    """The trained PLY at ``model.path/splats.ply`` (INRIA layout); returns the training report."""
    from pathlib import Path

    from splatflow.presets import train_options
    from splatflow.stages.train import train as run_train
    from splatflow.tasks import checkpoint_uri, record_failure, task_output

    with record_failure("train", output_uri):
        report = run_train(Path(sfm_model.path), Path(model.path), sh_degree=sh_degree,
                           **train_options(quality, iterations, max_splats),
                           checkpoint_uri=checkpoint_uri(output_uri), keep_checkpoints=False)
    model.metadata.update(task_output({"splats": report.get("splats"), "psnr_test": report.get("psnr_test")}))
    return task_output(report)
