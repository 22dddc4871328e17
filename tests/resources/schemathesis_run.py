"""schemathesis run as a process against a live Jupyter server's openapi.json: the default
fuzz budget (tests/integration/test_schemathesis.py) and the wider one
(tests/integration/test_security.py) share this one command line."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


async def run_schemathesis(jp_serverapp, jp_http_port, jp_base_url, tmp_path: Path, max_examples: int,
                           checks: str = CHECKS) -> tuple[int, str]:
    token = jp_serverapp.identity_provider.token
    url = f"http://127.0.0.1:{jp_http_port}{jp_base_url}bodhi/v1/openapi.json"
    st = Path(sys.executable).with_name("schemathesis")
    proc = await asyncio.create_subprocess_exec(
        str(st), "run", url, "-H", f"Authorization: Bearer {token}", "--checks", checks,
        "--max-examples", str(max_examples), "--request-timeout", "20", "--phases", "examples,coverage,fuzzing",
        # A pull downloads from a hub; with none reachable its 502 is the right answer, which
        # `not_a_server_error` would count against us (tests/integration/test_pull.py covers it).
        "--exclude-path", "/modelfiles/pull",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1"})
    out, _ = await asyncio.wait_for(proc.communicate(), 900)
    return proc.returncode, out.decode(errors="replace")
