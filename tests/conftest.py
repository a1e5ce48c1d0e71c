from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("INSTRUCTERC_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))


def requires_shared(*parts: str):
    """Skip a test, with the reason, when the real datasets are not beside the repository."""
    path = SHARED.joinpath(*parts)
    return pytest.mark.skipif(not path.exists(), reason=f"real data not found at {path}")


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    if not SHARED.exists():
        pytest.skip(f"real data not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
