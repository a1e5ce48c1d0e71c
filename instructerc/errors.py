"""The one exception type for mistakes a user can fix (bad path, bad row, bad option).

The CLI prints these as a single line and exits non-zero; anything else is a bug and keeps
its traceback.
"""


class UserError(Exception):
    """A problem with the user's input, reported as one line: where, and what is wrong."""

    def __init__(self, message: str, *, path: object = None, row: object = None):
        where = ""
        if path is not None:
            where = f"{path}"
            if row is not None:
                where += f", row {row}"
            where += ": "
        super().__init__(where + message)


class Stopped(Exception):
    """A run that stopped cleanly on a signal (SIGTERM, SIGINT) after saving its state; the CLI
    prints the message and exits with 128 + the signal number, as a killed process would."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
