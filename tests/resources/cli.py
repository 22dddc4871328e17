"""The bodhi-nb command run as a user would: a real process, on its own BODHI_HOME, with no
keyring and no master secret inherited from the test process (pass them in `env`)."""

from __future__ import annotations

import os
import subprocess
import sys


def cli(home, *args, env=None, input=None):
    e = {**os.environ, "BODHI_HOME": str(home), "BODHI_NO_KEYRING": "1", **(env or {})}
    e.pop("BODHI_ENCRYPTION_KEY", None)
    return subprocess.run([sys.executable, "-m", "bodhi_nb.cli", *args], capture_output=True, text=True, env=e,
                          input=input, timeout=120)
