"""Where the project finds material it does not ship: the shared datasets and reference outputs.

The shared folder sits beside the repository (``<repo>/../shared``) on developer machines and in CI;
``IRTRACK_SHARED`` points elsewhere. Nothing here is copied into the project.
"""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("IRTRACK_SHARED", REPO_ROOT.parent / "shared"))
DATA_DIR = SHARED_DIR / "data"
GOLDEN_DIR = SHARED_DIR / "golden"
