"""Loading the COSMIC pickles without trusting them.

`pickle.load` runs whatever callable a file names, so a pickle from the internet is code. The
restricted unpickler below resolves only the few numpy names these files contain (dtype and
the scalar constructor, for EmoryNLP's int32 one-hots); lists, dicts, strings and ints need no
name at all. Any other name is refused before it is imported, so nothing of it runs.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy

from instructerc.errors import UserError

try:  # numpy >= 2 moved the module; pickles written by numpy 1 still name numpy.core
    from numpy._core.multiarray import scalar as _numpy_scalar
except ImportError:  # pragma: no cover - numpy 1
    from numpy.core.multiarray import scalar as _numpy_scalar

ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "dtype"): numpy.dtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path):
        super().__init__(file, encoding="latin1")  # the files hold Python-2-era byte strings
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise UserError(
                f"refused to load: the pickle asks for {module}.{name}, which is not one of the "
                f"numpy types a COSMIC data file needs (nothing of it was run)",
                path=self.path,
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UserError("refused to load: the pickle uses persistent ids", path=self.path)


def safe_load(path: str | Path) -> Any:
    """Unpickle a data file admitting only plain containers, strings, numbers and numpy scalars."""
    path = Path(path)
    if not path.is_file():
        raise UserError("file not found", path=path)
    with open(path, "rb") as f:
        try:
            return _RestrictedUnpickler(f, path).load()
        except UserError:
            raise
        except Exception as e:  # truncated or not a pickle at all
            raise UserError(f"not a readable pickle ({type(e).__name__}: {e})", path=path) from None


# Bytes 0x80-0x9f mean printable characters in Windows-1252 but C1 controls in Latin-1, which is
# how meld.pkl's text was decoded: '\x92' there is a right single quote.
_CP1252 = {}
for _b in range(0x80, 0xA0):
    try:
        _CP1252[_b] = bytes([_b]).decode("cp1252")
    except UnicodeDecodeError:  # 0x81, 0x8d, 0x8f, 0x90, 0x9d are undefined; leave them
        pass


def repair_cp1252(text: str) -> str:
    """Turn Windows-1252 bytes mis-decoded as Latin-1 back into the characters they stand for."""
    return text.translate(_CP1252)
