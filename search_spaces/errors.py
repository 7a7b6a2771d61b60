"""The errors of malformed descriptions: a search-space spec (SpecError) and a derived net's arch file
(ArchError). Each message is one line naming the file, the field and the problem."""


class SpecError(ValueError):
    """A malformed search-space spec; ``str(err)`` is one line: ``file: field: problem``."""

    def __init__(self, source: str, path: str, problem: str):
        self.source, self.path, self.problem = source, path, problem
        super().__init__(f"{source}: {path}: {problem}" if path else f"{source}: {problem}")


class ArchError(ValueError):
    """A malformed arch description; one line naming the file/field and the problem."""
