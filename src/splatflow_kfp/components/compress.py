"""KFP component: compress the trained PLY into a single-file SOG v2 bundle (GPU or CPU, same output)."""

# no `from __future__ import annotations`: kfp reads the real annotation objects (Input[Model] ...)
from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from splatflow.spec import image_for


@dsl.component(base_image=image_for("compress"), install_kfp_package=False)
def compress(model: Input[Model], output_uri: str, sog: Output[Artifact], target_psnr: float = 0.0
             ) -> dict:
    """The bundle at ``sog.path/splats.sog``; returns the codec report (bytes, ratio, bytes per splat).
    ``target_psnr`` > 0: the smallest file rendering at least that many dB from the PLY (0: full precision)."""
    from pathlib import Path

    from splatflow.spec import stage
    from splatflow.stages.compress import compress as run_compress
    from splatflow.tasks import record_failure, task_output

    Path(sog.path).mkdir(parents=True, exist_ok=True)  # KFP creates the artifact's parent, not the folder
    with record_failure("compress", output_uri):
        report = run_compress(Path(model.path) / stage("train").files["ply"],
                              Path(sog.path) / stage("compress").files["sog"], fidelity_views=4,
                              target_psnr=target_psnr or None)
    sog.metadata.update(task_output({"bytes": report.get("bytes"), "bytes_per_splat": report.get("bytes_per_splat")}))
    return task_output(report)
