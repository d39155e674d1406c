"""KFP component: the exit task. Sends the run's outcome (success or failure) to the notification target."""

# no `from __future__ import annotations`: kfp reads the real annotation objects (Input[Model] ...)
from kfp import dsl

from components.images import image_for


@dsl.component(base_image=image_for("notify"), install_kfp_package=False)
def notify(status: dsl.PipelineTaskFinalStatus, source_uri: str, output_uri: str, run_id: str,
           target: str) -> dict:
    """Notify ``target`` (empty: the default channel from the environment); returns ``delivered``, ``channel``."""
    from components.runtime import final_status, published_report, scene_name, task_output
    from splatflow.stages.notify import notify as run_notify

    outcome = final_status(status.state, status.error_message, status.pipeline_task_name)
    scene = scene_name(source_uri)
    succeeded = outcome["status"] == "succeeded"
    report = published_report(output_uri, scene, run_id, source_uri=source_uri, succeeded=succeeded)
    return task_output(run_notify(outcome["status"], scene=scene, report=report, target=target or None,
                                  error=outcome["error"]))
