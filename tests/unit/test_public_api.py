"""The library's public names (``__all__``) and the generated stage contract (docs/STAGES.md).

A change to a public module's exports must be deliberate: edit PUBLIC with it (and say so in the change).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from splatflow import spec

ROOT = Path(__file__).resolve().parents[2]

PUBLIC: dict[str, set[str]] = {
    "splatflow.errors": {
        "DependencyMissing", "EnvironmentProblem", "ImageError", "InputError", "InvalidValuesError", "NotifyError",
        "OutputBusyError", "OutputExistsError", "PlyError", "SfmError", "SogError", "SplatflowError", "StageError",
        "StorageError", "Terminated", "TrainError"
    },
    "splatflow.spec": {
        "BuildSpec", "CPU_DOCKERFILE", "ClusterNames", "GPU", "GPU_DOCKERFILE", "GpuScheduling", "STAGES",
        "STAGE_NAMES", "Stage", "all_images", "build_spec", "build_specs", "git_commit", "image_for", "registry",
        "stage", "tag"
    },
    "splatflow.tasks": {
        "RUN_ID_ENV", "checkpoint_uri", "error_line", "failure_uri", "read_failure", "record_failure", "run_id",
        "task_output"
    },
    "splatflow.storage": {
        "Location", "ObjectInfo", "SHA256_META", "check_bucket", "client", "content_type", "create_object",
        "delete", "download", "download_prefix", "endpoint_url", "exists", "join", "list_objects", "list_uris",
        "parse", "presign", "read_bytes", "read_tagged", "relative_name", "replace_object", "sha256_file", "stat",
        "upload", "upload_dir", "verify_stored", "write_bytes"
    },
    "splatflow.gaussians": {
        "GaussianCloud", "SH_C0", "SH_COEFFS", "logit", "sh_degree_for_coeffs", "sigmoid"
    },
    "splatflow.options": {
        "DEFAULT_MAX_SPLATS", "LOCAL_DEFAULTS", "MAX_TARGET_PSNR", "MIN_IMAGES", "MIN_SIDE", "MIN_TARGET_PSNR",
        "RUN_OPTIONS", "STAGE_OPTIONS", "Option", "check_options", "check_run_parameters"
    },
    "splatflow.presets": {
        "CPU_BACKGROUND_POINTS", "CPU_ITERATIONS", "CPU_MAX_SPLATS", "DEFAULT_QUALITY", "MAX_SH_DEGREE", "PRESETS",
        "Preset", "TrainOptions", "preset", "train_options"
    },
    "splatflow.io.ply": {
        "NORMALS", "OnInvalid", "REQUIRED", "inria_layout", "read_ply", "write_ply"
    },
    "splatflow.stages.ingest": {
        "FLAT", "FRAME_BLUR_RATIO", "FRAME_DUPLICATE", "JPEG_QUALITY", "MAX_ARCHIVE_ENTRIES", "PHOTO_BLUR_RATIO",
        "PHOTO_DUPLICATE", "check_out_dir", "fingerprint", "ingest"
    },
    "splatflow.stages.sfm": {
        "EXHAUSTIVE_LIMIT", "FALLBACK_EXHAUSTIVE_LIMIT", "GOOD_ENOUGH", "MATCHERS", "SEQUENTIAL_OVERLAP", "sfm"
    },
    "splatflow.stages.publish": {
        "CONTACT_SHEET", "FILE_KEYS", "LATEST", "LOCK_TTL_ENV", "MANIFEST", "MANIFEST_FORMAT", "RunLock",
        "UPLOAD_ATTEMPTS", "lock_uri", "publish", "published_files", "published_run", "read_latest",
        "read_manifest", "run_summary", "scene_name"
    },
    "splatflow.stages.notify": {
        "MAX_LINK_EXPIRES", "Message", "STATUSES", "SmtpConfig", "TEMPORARY_CREDENTIAL_ENV", "build_message",
        "check_link_expires", "final_status", "link_expires_from_env", "link_for", "notify", "send", "send_smtp",
        "send_sns", "send_webhook", "temporary_credentials"
    },
    "splatflow.limits": {
        "MAX_JSON_DEPTH", "MAX_REPORT_BYTES", "json_depth", "parse_json", "read_json", "read_limited"
    },
    "splatflow.redaction": {
        "MASK", "SECRET_ENV", "redact", "secret_values", "setting", "url_parts"
    },
    "splatflow.doctor": {
        "BLOCKING_EFFECTS", "Check", "DEFAULT_NAMESPACE", "DEVICE_PLUGIN_NAME", "Doctor", "IN_CLUSTER_TOKEN",
        "MIN_KFP_VERSION", "as_json", "doctor", "format_report", "kfp_auth", "kfp_token_path", "tolerates"
    },
    "splatflow.imaging": {
        "ARCHIVE_SUFFIXES", "DEFAULT_MAX_PIXELS", "HEIC_SUFFIXES", "MIN_IMAGES", "MIN_SIDE", "PHOTO_SUFFIXES",
        "SHARPNESS_SIDE", "THUMB_SIZE", "VIDEO_SUFFIXES", "camera_exif", "difference", "fit_size", "gray",
        "heic_supported", "image_sharpness", "image_suffixes", "load_image", "open_checked", "sharpness",
        "thumbnail"
    },
    "splatflow.devices": {
        "DEVICE_NAMES", "resolve_device"
    },
    "splatflow.metrics": {
        "MAX_PSNR", "bytes_per_splat", "finite_db", "gaussian_window", "path_bytes", "psnr", "ssim",
        "ssim_tensor"
    },
    "splatflow.cameras": {
        "COLMAP_FILES", "Camera", "DEFAULT_UP", "colmap_cameras", "colmap_model_dir", "colmap_model_files",
        "dense_region", "intrinsics", "load_cameras", "look_at", "npz_cameras", "orbit_cameras", "parse_size",
        "read_colmap"
    },
    "splatflow.stages.train": {
        "CONTACT_SHEET", "DEFAULT_ITERATIONS", "PLY", "REPORT", "STRATEGIES", "train"
    },
    "splatflow.training.checkpoint": {
        "CheckpointStore", "KEEP", "checkpoint_name", "checkpoint_path", "list_checkpoints", "load_latest",
        "save_checkpoint"
    },
    "splatflow.training.contact_sheet": {
        "SheetRow", "write_contact_sheet"
    },
    "splatflow.training.loop": {
        "LoopConfig", "RunState", "peak_memory", "restore", "run_loop", "sigterm_flag", "snapshot"
    },
    "splatflow.training.loss": {
        "SSIM_WEIGHT", "photometric_loss"
    },
    "splatflow.training.optim": {
        "LR", "lr_boost", "make_optimizers", "means_lr", "set_lr"
    },
    "splatflow.training.render_adapter": {
        "Renderer", "evaluate"
    },
    "splatflow.training.scene": {
        "PINHOLE_MODELS", "Scene", "View", "held_out_indices", "load_scene", "viewer_camera"
    },
    "splatflow.training.splats": {
        "background_shell", "init_params", "to_cloud"
    },
    "splatflow.training.strategies": {
        "CpuDefault", "CpuMCMC", "GsplatDefault", "GsplatMCMC", "MCMC_OPACITY_REG", "MCMC_SCALE_REG", "NEVER",
        "STRATEGIES", "Strategy", "make_strategy", "schedule", "screen_grad"
    },
    "splatflow.training.strategy": {
        "CpuDefaultStrategy", "CpuMCMCStrategy", "Optimizers", "Params", "append", "quat_to_rotmat",
        "relocation_values", "reset_moments", "select"
    },
    "splatflow.training.synthetic": {
        "make_synthetic_sfm"
    },
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_are_the_documented_ones(module: str) -> None:
    mod = importlib.import_module(module)
    assert set(mod.__all__) == PUBLIC[module], (
        f"{module}.__all__ changed: added {set(mod.__all__) - PUBLIC[module]}, "
        f"removed {PUBLIC[module] - set(mod.__all__)}")
    assert len(mod.__all__) == len(set(mod.__all__)), "a name is listed twice"
    missing = [name for name in mod.__all__ if not hasattr(mod, name)]
    assert not missing, f"{module}.__all__ names what it does not define: {missing}"


def test_the_core_library_imports_no_kfp() -> None:
    """src/splatflow never imports kfp (the KFP layer is splatflow_kfp); checked on the source, import by import."""
    offenders = [p.relative_to(ROOT).as_posix() for p in (ROOT / "src" / "splatflow").rglob("*.py")
                 if any(line.strip().startswith(("import kfp", "from kfp")) for line in p.read_text().splitlines())]
    assert offenders == []


def test_stages_doc_is_generated_from_the_spec() -> None:
    """docs/STAGES.md is `python -m splatflow.spec` (`make docs`): resources, images, GPU facts and the stage
    functions' signatures come from the code, so the doc cannot drift."""
    assert (ROOT / "docs" / "STAGES.md").read_text() == spec.stages_markdown(), "run `make docs`"
