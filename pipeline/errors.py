"""Errors that the CLI reports as one clear line instead of a traceback."""


class MtrecError(Exception):
    """A problem the user can fix; its message names the file or setting at fault."""


class DataError(MtrecError):
    """Input data is missing, malformed or out of range."""
