"""splatflow: photos of a scene in, a web-ready compressed 3D Gaussian Splat (SOG) out.

The core library (this package) imports no kfp: every stage is a plain function in :mod:`splatflow.stages`,
a CLI subcommand (:mod:`splatflow.cli`) and, in :mod:`splatflow_kfp.components`, a thin Kubeflow component.
"""

from splatflow.errors import SplatflowError
from splatflow.gaussians import GaussianCloud

__version__ = "0.1.0"
__all__ = ["GaussianCloud", "SplatflowError", "__version__"]
