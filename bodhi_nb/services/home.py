"""Where bodhi_nb keeps its files: `$BODHI_HOME`, else `<jupyter data dir>/bodhi_nb`."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["bodhi_home"]


def bodhi_home(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("BODHI_HOME")
    if env:
        return Path(env).expanduser()
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir()) / "bodhi_nb"
