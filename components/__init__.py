"""KFP components, one module per stage: thin wrappers whose bodies call ``splatflow.stages.<stage>``.

Each component is a lightweight Python component built on its stage image (``components.images``) with
``install_kfp_package=False``: the image already has splatflow and kfp, so pods never pip-install at start-up and
the same components run locally under ``kfp.local.SubprocessRunner(use_venv=False)``.

Importing a component module imports kfp; ``components.images`` and ``components.runtime`` do not.
"""
