"""The one exception type for mistakes a user can fix (bad path, bad row, bad option).

The CLI prints these as a single line and exits non-zero; anything else is a bug and keeps
its traceback.
"""


# What str.splitlines() breaks at; a terminal may too.
_LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


class UserError(Exception):
    """A problem with the user's input, reported as one line: where, and what is wrong."""

    def __init__(self, message: str, *, path: object = None, row: object = None):
        where = ""
        if path is not None:
            where = f"{path}"
            if row is not None:
                where += f", row {row}"
            where += ": "
        # Messages quote the user's own text (a header cell, a label word, a file name), which may
        # hold a line break; escaped, the message stays one line.
        super().__init__((where + message).translate(_LINE_BREAKS))


class Stopped(Exception):
    """A run that stopped cleanly on a signal (SIGTERM, SIGINT) after saving its state; the CLI
    prints the message and exits with 128 + the signal number, as a killed process would."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
