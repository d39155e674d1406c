"""The one exception hierarchy of splatflow.

Every error the library raises on purpose derives from :class:`SplatflowError`. The CLI catches it, prints
``error: <message>`` on one line (plus ``hint: <fix>`` when the error carries one) and exits with the class's
``exit_code``, so scripts can tell bad input (2) from environment problems (3) and stage failures (4).

    SplatflowError                 exit 1  base class
    ├── InputError                 exit 2  the user's input is wrong (file, argument, URI)
    │   ├── PlyError                       a PLY file is not a valid 3DGS PLY
    │   ├── SogError                       a SOG/SOGS file set is not valid
    │   ├── InvalidValuesError             NaN/Inf values where they are not allowed
    │   ├── ImageError                     images or video that cannot be used
    │   ├── OutputExistsError              the output exists and --overwrite was not given
    │   └── OutputBusyError                another process is writing the same output right now
    ├── EnvironmentProblem         exit 3  the machine or the cloud is not set up (missing CUDA, credentials ...)
    │   ├── StorageError                   object storage failed (missing bucket, access denied, bad endpoint)
    │   └── DependencyMissing              an optional dependency (extra) is not installed
    └── StageError                 exit 4  a pipeline stage could not produce its result
        ├── SfmError                       structure from motion registered too few images
        ├── TrainError                     training failed
        └── NotifyError                    a notification could not be delivered

    Terminated (SystemExit)        exit 143  SIGTERM arrived (splatflow.fsutil.terminate_cleanly): raised so
                                             that every ``with`` block and ``finally`` cleans up on the way out
"""

from __future__ import annotations

__all__ = [
    "DependencyMissing", "EnvironmentProblem", "ImageError", "InputError", "InvalidValuesError", "NotifyError",
    "OutputBusyError", "OutputExistsError", "PlyError", "SfmError", "SogError", "SplatflowError", "StageError",
    "StorageError", "Terminated", "TrainError"
]


class SplatflowError(Exception):
    """Base of all splatflow errors: a one-line message and an optional hint that names the fix."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class InputError(SplatflowError):
    """The input given by the user is wrong; the message names the problem and the fix."""

    exit_code = 2


class PlyError(InputError):
    """A file is not a usable 3DGS PLY (not a PLY, truncated, missing properties, zero splats ...)."""


class SogError(InputError):
    """A SOG v2 / SOGS v1 file set is missing files or has an invalid meta.json."""


class InvalidValuesError(InputError):
    """NaN or Inf values were found where the caller did not allow dropping them."""

    def __init__(self, message: str, *, count: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.count = count


class ImageError(InputError):
    """Images or video that cannot be used (unreadable, too large, too few)."""


class OutputExistsError(InputError):
    """The output path exists and overwriting was not requested."""


class OutputBusyError(InputError):
    """Another process is writing the same output (a publish of the same run id) right now."""


class EnvironmentProblem(SplatflowError):
    """The environment is not set up for the request (no CUDA, no credentials, an extra not installed)."""

    exit_code = 3


class StorageError(EnvironmentProblem):
    """Object storage failed: missing bucket or key, access denied, unreachable endpoint."""


class DependencyMissing(EnvironmentProblem):
    """An optional dependency is missing; the hint names the extra to install."""


class StageError(SplatflowError):
    """A pipeline stage ran but could not produce its result."""

    exit_code = 4


class SfmError(StageError):
    """Structure from motion failed (too few registered images); carries the registration report."""

    def __init__(self, message: str, *, report: dict[str, object] | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.report = report or {}


class TrainError(StageError):
    """Training failed or produced no usable splats."""


class NotifyError(StageError):
    """A notification could not be delivered."""


class Terminated(SystemExit):
    """SIGTERM arrived (a pod being stopped, ``kill``). A SystemExit, not an Exception: nothing catches it by
    accident, every ``with`` block and ``finally`` runs on the way out, and an uncaught one ends the process with
    exit code 143 (128 + SIGTERM) and no traceback."""

    exit_code = 143

    def __init__(self, message: str = "terminated by SIGTERM") -> None:
        super().__init__(self.exit_code)
        self.message = message

    def __str__(self) -> str:
        return self.message
