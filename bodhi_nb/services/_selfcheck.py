"""Private: `python -m bodhi_nb.services._selfcheck` after install.

Fails loudly when the installed llama.cpp cannot run on this CPU (a wheel built with
-march=native elsewhere dies with SIGILL on the first token), instead of leaving the
user with a local engine that crashes on every request.
"""

from __future__ import annotations

import subprocess
import sys

from .local_engine import local_extra_available
from .local_models import LocalModels

_PROBE = """
from llama_cpp import Llama
llm = Llama(model_path={path!r}, n_ctx=128, n_threads=2, verbose=False)
out = llm.create_completion("Hello", max_tokens=2)
print("ok", len(out["choices"]))
"""


def main() -> int:
    path = LocalModels.builtin_path()
    if not local_extra_available() or path is None:
        print("bodhi_nb: local extra not installed; remote API models only.")
        return 0
    r = subprocess.run([sys.executable, "-c", _PROBE.format(path=str(path))], capture_output=True, text=True)
    if r.returncode != 0 or not r.stdout.startswith("ok"):
        print(f"bodhi_nb: llama.cpp failed to run the bundled model (exit {r.returncode}).\n"
              "Rebuild llama-cpp-python without native CPU flags, e.g.:\n"
              "  pip cache remove 'llama_cpp_python*'\n"
              "  CMAKE_ARGS='-DGGML_NATIVE=OFF' pip install --force-reinstall --no-deps llama-cpp-python\n"
              + r.stderr[-2000:], file=sys.stderr)
        return 1
    print("bodhi_nb: local engine self-check ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
