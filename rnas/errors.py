"""User-facing errors: one line, exit code 2, no traceback."""
from search_spaces import SpecError
from supernets import ArchError


class UserError(ValueError):
    """Bad input from the user (flag, path, file); the message is the whole story."""


USER_ERRORS = (UserError, SpecError, ArchError)
