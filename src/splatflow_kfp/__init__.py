"""splatflow's Kubeflow Pipelines layer: the stage components (:mod:`splatflow_kfp.components`) and the pipeline,
its compile / upload / run client and the local run (:mod:`splatflow_kfp.pipelines`).

It imports kfp; the core library (:mod:`splatflow`) does not. Installed with the ``pipeline`` extra.
"""
