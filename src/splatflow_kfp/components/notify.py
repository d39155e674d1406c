"""KFP component: the exit task. Sends the run's outcome (success or failure) to the notification target."""

# no `from __future__ import annotations`: kfp reads the real annotation objects (Input[Model] ...)
from kfp import dsl

from splatflow.spec import image_for


@dsl.component(base_image=image_for("notify"), install_kfp_package=False)
def notify(status: dsl.PipelineTaskFinalStatus, source_uri: str, output_uri: str, target: str) -> dict:
    """Notify ``target`` (empty: the default channel from the environment); returns ``delivered``, ``channel``."""
    from splatflow.stages.notify import notify as run_notify
    from splatflow.tasks import run_id, task_output

    return task_output(run_notify(status.state, error_message=status.error_message,
                                  task_name=status.pipeline_task_name, source_uri=source_uri, output_uri=output_uri,
                                  run_id=run_id(), target=target))
