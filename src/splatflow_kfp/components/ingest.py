"""KFP component: ingest the source (s3://, file://, a folder, a .zip or a video) into a Dataset of images."""

# no `from __future__ import annotations`: kfp reads the real annotation objects (Input[Model] ...)
from kfp import dsl
from kfp.dsl import Dataset, Output

from splatflow.spec import image_for


@dsl.component(base_image=image_for("ingest"), install_kfp_package=False)
def ingest(source_uri: str, source_fingerprint: str, quality: str, output_uri: str, images: Output[Dataset]) -> dict:
    """Validated, de-duplicated images in ``images.path/images/``; returns the ingest report.

    ``source_fingerprint`` (from :func:`ingest_fingerprint`) is not read here: it puts the source's content into this
    task's cache key, so the same photos at the same address are ingested once."""
    from pathlib import Path

    from splatflow.presets import preset
    from splatflow.stages.ingest import ingest as run_ingest
    from splatflow.tasks import record_failure, task_output

    with record_failure("ingest", output_uri):
        report = run_ingest(source_uri, Path(images.path), max_side=preset(quality)["max_side"])
    images.metadata.update(task_output({"kept": len(report.get("kept") or [])}))
    return task_output(report)


@dsl.component(base_image=image_for("ingest"), install_kfp_package=False)
def ingest_fingerprint(source_uri: str, output_uri: str, quality: str, iterations: int, max_splats: int,
                       sh_degree: int, notify_target: str, target_psnr: float) -> str:
    """The run's parameters checked, then the content fingerprint of the source (``sha256:...`` over its files'
    names, sizes and content hashes)."""
    from splatflow.options import check_run_parameters
    from splatflow.stages.ingest import fingerprint
    from splatflow.tasks import record_failure

    with record_failure("ingest", output_uri):
        check_run_parameters({"quality": quality, "iterations": iterations, "max_splats": max_splats,
                              "sh_degree": sh_degree, "notify_target": notify_target, "target_psnr": target_psnr})
        return fingerprint(source_uri)
