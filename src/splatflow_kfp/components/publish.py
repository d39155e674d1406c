"""KFP component: publish the SOG (bundle and folder), a viewer page and the run report under ``output_uri``."""

# no `from __future__ import annotations`: kfp reads the real annotation objects (Input[Model] ...)
from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from splatflow.spec import image_for


@dsl.component(base_image=image_for("publish"), install_kfp_package=False)
def publish(output_uri: str, source_uri: str, sog: Input[Artifact], model: Input[Model],
            ingest_report: dict, sfm_report: dict, train_report: dict, compress_report: dict,
            report: Output[Artifact]) -> dict:
    """Objects under ``output_uri/<scene>/<run_id>/`` (with training's contact sheet from ``model``); returns
    ``urls``, ``manifest_uri``, ``viewer_uri``.

    ``report.path`` gets the publish result as JSON so the Kubeflow UI links the run to what it published.
    """
    import json
    from pathlib import Path

    from splatflow.stages.publish import publish as run_publish
    from splatflow.stages.publish import published_files, scene_name
    from splatflow.tasks import record_failure, run_id, task_output

    with record_failure("publish", output_uri):
        result = run_publish(output_uri, scene=scene_name(source_uri), run_id=run_id(),
                             files=published_files(Path(sog.path), Path(model.path)), unpack_sog=True,
                             reports={"ingest": ingest_report, "sfm": sfm_report, "train": train_report,
                                      "compress": compress_report})
    Path(report.path).write_text(json.dumps(result, indent=2, default=str))
    report.metadata.update(task_output({"viewer_uri": result.get("viewer_uri"),
                                         "manifest_uri": result.get("manifest_uri")}))
    return task_output(result)
