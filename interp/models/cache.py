"""Where interp keeps models it downloaded (``builtin/``) or converted from GGUF (``gguf/``)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$INTERP_CACHE``, else ``~/.cache/interp``."""
    return Path(os.environ.get("INTERP_CACHE", Path.home() / ".cache" / "interp"))
