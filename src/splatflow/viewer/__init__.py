"""The published viewer page (PlayCanvas's SuperSplat viewer, camera fitted to the scene); see :mod:`.page`."""

from splatflow.viewer.page import assets_dir, build_page, fit_camera, install_assets, scene_bounds

__all__ = ["assets_dir", "build_page", "fit_camera", "install_assets", "scene_bounds"]
