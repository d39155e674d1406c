"""The splatflow pipeline: graph (``splat_pipeline``), compile, upload and run (``client``), local run (``local``).

``python -m splatflow_kfp.pipelines --help`` is what the Makefile's compile / upload / run-pipeline / run-local
targets call.
"""
