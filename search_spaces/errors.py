"""The errors of malformed descriptions: a search-space spec (SpecError) and a derived net's arch file
(ArchError). Each message is one line naming the file, the field and the problem."""


def not_text(err: UnicodeDecodeError) -> str:
    """What is wrong with a file that does not decode as UTF-8, for a one-line error naming it."""
    return f"not a text file (byte {err.object[err.start]:#04x} at offset {err.start} is not UTF-8)"


class SpecError(ValueError):
    """A malformed search-space spec; ``str(err)`` is one line: ``file: field: problem``."""

    def __init__(self, source: str, path: str, problem: str):
        self.source, self.path, self.problem = source, path, problem
        super().__init__(f"{source}: {path}: {problem}" if path else f"{source}: {problem}")


class ArchError(ValueError):
    """A malformed arch description; one line naming the file/field and the problem."""
