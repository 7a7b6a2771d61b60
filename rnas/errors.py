"""User-facing errors: one line, exit code 2, no traceback."""
from search_spaces import SpecError
from supernets import ArchError


class UserError(ValueError):
    """Bad input from the user (flag, path, file); the message is the whole story."""


class TrainingDiverged(RuntimeError):
    """A loss term became non-finite: the run stopped before writing anything from that step on."""


USER_ERRORS = (UserError, SpecError, ArchError)
