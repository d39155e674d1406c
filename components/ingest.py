"""KFP component: ingest the source (s3://, file://, a folder, a .zip or a video) into a Dataset of images."""

# no `from __future__ import annotations`: kfp reads the real annotation objects (Input[Model] ...)
from kfp import dsl
from kfp.dsl import Dataset, Output

from components.images import image_for


@dsl.component(base_image=image_for("ingest"), install_kfp_package=False)
def ingest(source_uri: str, quality: str, output_uri: str, run_id: str, images: Output[Dataset]) -> dict:
    """Validated, de-duplicated images in ``images.path/images/``; returns the ingest report."""
    from pathlib import Path

    from splatflow.presets import preset
    from splatflow.stages.ingest import ingest as run_ingest
    from splatflow.tasks import record_failure, task_output

    with record_failure("ingest", output_uri, run_id):
        report = run_ingest(source_uri, Path(images.path), max_side=preset(quality)["max_side"])
    images.metadata.update(task_output({"kept": len(report.get("kept") or [])}))
    return task_output(report)
