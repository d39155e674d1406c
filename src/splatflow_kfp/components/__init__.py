"""KFP components, one module per stage: thin wrappers whose bodies call ``splatflow.stages.<stage>``.

Each component is a lightweight Python component built on its stage image (``splatflow.spec``) with
``install_kfp_package=False``: the image already has splatflow and kfp, so pods never pip-install at start-up and
the same components run locally under ``kfp.local.SubprocessRunner(use_venv=False)``.

Component bodies hold no logic: they call library functions (``splatflow.stages.*``, ``splatflow.presets``,
``splatflow.tasks``), which import no kfp. Importing a component module imports kfp; ``splatflow.spec`` does
not.
"""
