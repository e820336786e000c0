"""Exceptions raised for bad input, missing models and failed processing.

Every error the CLI reports to a user derives from :class:`MhubCpuError`; the CLI prints its
message and exits with :attr:`MhubCpuError.exit_code` (never 0).
"""


class MhubCpuError(Exception):
    """Base class of all user-facing errors of the engine."""

    exit_code = 1


class InputError(MhubCpuError):
    """The input path, DICOM series or image cannot be used (missing, not DICOM, not CT, broken)."""

    exit_code = 2


class ModelError(MhubCpuError):
    """A model file or catalogue entry is missing, malformed or incompatible."""

    exit_code = 3


class DownloadError(ModelError):
    """A model could not be downloaded (offline, HTTP error, checksum mismatch)."""


class ProcessingError(MhubCpuError):
    """Inference or output writing failed on otherwise valid input."""

    exit_code = 4
