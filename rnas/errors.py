"""User-facing errors: one line, exit code 2, no traceback. A leaf: it imports no rnas module and no torch."""
from search_spaces.errors import ArchError, SpecError


class UserError(ValueError):
    """Bad input from the user (flag, path, file); the message is the whole story."""


class TrainingDiverged(RuntimeError):
    """A loss term became non-finite: the run stopped before writing anything from that step on."""


USER_ERRORS = (UserError, SpecError, ArchError)

__all__ = ["USER_ERRORS", "ArchError", "SpecError", "TrainingDiverged", "UserError"]
