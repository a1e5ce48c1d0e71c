"""`python -m instructerc` and `deepspeed instructerc ...` (which runs this folder as a script).

Run as a script, this file has no package context and Python puts the package folder itself
first on sys.path, where module names such as `train` would shadow others; replace it with
the folder's parent so that `import instructerc` works. Absolute imports only.
"""

import os
import sys

if not __package__:
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.insert(0, os.path.dirname(here))

from instructerc.cli import main  # noqa: E402

sys.exit(main())
