"""File formats: the 3DGS PLY (:mod:`splatflow.io.ply`)."""
