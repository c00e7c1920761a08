"""Every user-facing failure in slimkit is a `SlimkitError`.

Each message says what went wrong, where (file, layer, column, option) and what to do about it. The CLI prints the
message on one line (no traceback unless `--debug`). Subclasses let callers catch one family of failures.
"""

from __future__ import annotations

__all__ = [
    "SlimkitError",
    "ConfigError",
    "UnknownNameError",
    "MissingDependencyError",
    "DataError",
    "DataNotFoundError",
    "CorruptDataError",
    "ModelError",
    "CheckpointError",
    "ProfileError",
    "ExportError",
    "GraphError",
    "UnsupportedOpError",
    "PruneError",
    "BudgetError",
    "TrainError",
    "DistillError",
    "SearchError",
]


class SlimkitError(Exception):
    """Base class: a failure the user can act on. The message names the problem and the fix."""


class ConfigError(SlimkitError, ValueError):
    """An option or config value is invalid (wrong type, out of range, contradictory). `option` is the dotted path
    of the offending option when there is one (`train.lr`) and `detail` the message without it, so the CLI can name
    the flag instead (`--lr must be > 0, got -1.0`)."""

    def __init__(self, message: str = "", *, option: str | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.option, self.detail = option, detail

    @classmethod
    def for_option(cls, option: str, detail: str) -> ConfigError:
        """The error of one option: "<option> <detail>", with both kept apart so a front end names its own flag."""
        return cls(f"{option} {detail}", option=option, detail=detail)


class UnknownNameError(ConfigError, KeyError):
    """A registry lookup failed; the message lists the known names and close matches."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class MissingDependencyError(SlimkitError, ImportError):
    """An optional dependency is not installed; the message names the pip extra to install."""


class DataError(SlimkitError):
    """Dataset problems."""


class DataNotFoundError(DataError, FileNotFoundError):
    """Data files are missing; the message says where slimkit looked and how to get or point to the data."""


class CorruptDataError(DataError, ValueError):
    """Data files exist but are malformed (bad magic number, truncated, count mismatch, empty folder)."""


class ModelError(SlimkitError):
    """A model cannot be built or used as asked (bad arguments, wrong input shape)."""


class CheckpointError(SlimkitError):
    """A checkpoint or pruning record is missing, corrupt, or does not match the model."""


class ProfileError(SlimkitError):
    """Counting MACs/params or measuring latency failed."""


class ExportError(SlimkitError):
    """ONNX export failed or the exported model disagrees with PyTorch."""


class GraphError(SlimkitError):
    """The model could not be traced or its channel dependencies could not be computed."""


class UnsupportedOpError(GraphError):
    """An operation or module the pruning engine cannot handle; the message names it and a workaround."""


class PruneError(SlimkitError):
    """Pruning could not be carried out as asked."""


class BudgetError(PruneError):
    """A MACs / params / latency budget cannot be met (e.g. below what the unprunable layers already cost)."""


class TrainError(SlimkitError):
    """Training failed (divergence, bad resume state)."""


class DistillError(SlimkitError):
    """Distillation set-up or logit-store problems."""


class SearchError(SlimkitError):
    """Architecture search problems (bad space, infeasible constraints, bad benchmark table)."""
