"""schemathesis against the served openapi.json: no 500 responses."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

MAX_EXAMPLES = int(os.environ.get("BODHI_NB_FUZZ_EXAMPLES", "15"))


async def run_schemathesis(jp_serverapp, jp_http_port, jp_base_url, tmp_path: Path, max_examples: int) -> tuple[int, str]:
    token = jp_serverapp.identity_provider.token
    url = f"http://127.0.0.1:{jp_http_port}{jp_base_url}bodhi/v1/openapi.json"
    st = Path(sys.executable).with_name("schemathesis")
    proc = await asyncio.create_subprocess_exec(
        str(st), "run", url, "-H", f"Authorization: Bearer {token}", "--checks", "not_a_server_error",
        "--max-examples", str(max_examples), "--request-timeout", "20", "--phases", "examples,coverage,fuzzing",
        # chat streams can hold a request open; everything else is fuzzed
        "--exclude-path", "/chat/completions",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1"})
    out, _ = await asyncio.wait_for(proc.communicate(), 900)
    return proc.returncode, out.decode(errors="replace")


async def test_no_server_errors(jp_serverapp, http_server_client, jp_http_port, jp_base_url, tmp_path):
    code, out = await run_schemathesis(jp_serverapp, jp_http_port, jp_base_url, tmp_path, MAX_EXAMPLES)
    assert code == 0, out[-6000:]
    assert "Fuzzing" in out and "passed" in out  # it really ran the phases
