"""The trainer behind `splatflow train` (:mod:`splatflow.stages.train` is the stage's contract: inputs, budget, report).

``scene`` (the SfM folder as views and points), ``splats`` (initial splats, export), ``optim`` (Adam, learning
rates), ``loss`` (L1 + D-SSIM), ``render_adapter`` (rendering and evaluating views), ``strategies`` (densification
behind one interface: gsplat or CPU x default or MCMC; ``strategy`` holds the CPU ones), ``loop`` (the steps,
SIGTERM, run state), ``checkpoint`` (checkpoints and their mirror), ``contact_sheet`` and ``synthetic`` (a test
scene).
"""
