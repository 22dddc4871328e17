"""Private: batch jobs from a notebook: `b.map(..., via="batch")`, `b.batches`, and a job's handle.

The rows become one JSONL file of chat requests (custom_id `row-000000001`..., so the output's
custom_id order is the row order), uploaded and run through the same batch operations as
`bodhi/v1/batches` (server_core/operations/_batches.py): at the provider for an OpenAI- or
Anthropic-format API model, here for every other model. The job's state lives in BODHI_HOME,
so a new kernel finds it with `b.batches.get(id)`, and its result is the DataFrame `map` returns.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..server_core.operations import CANCELLED, MapResult, structured_format

if TYPE_CHECKING:
    from ..server_core.operations import Operations
    from ._loop_thread import LoopThread

__all__ = ["BatchJob", "Batches", "submit"]

_ENDED = ("completed", "failed", "cancelled", "expired")


def _cid(i: int) -> str:
    return f"row-{i:09d}"


class BatchJob:
    """A batch job by id: `.status`, `.wait()`, `.result()`, `.cancel()` (from any kernel)."""

    def __init__(self, ops: Operations, loop: LoopThread, id: str, *, rows: Any = None, response_format: Any = None,
                 output: Any = None) -> None:
        self._ops, self._loop, self.id = ops, loop, id
        self._rows, self._rf, self._output = rows, response_format, output  # known when made in this kernel

    def __repr__(self) -> str:
        s = self.info()
        c = s["request_counts"]
        return f"<BatchJob {self.id} {s['status']}: {c['completed']}/{c['total']} done, {c['failed']} failed>"

    def info(self) -> dict[str, Any]:
        """The Batch object: status, request_counts, output and error file ids."""
        return self._loop.run(self._ops.batches.retrieve(self.id))

    @property
    def status(self) -> str:
        return str(self.info()["status"])

    def wait(self, *, progress: bool = True, poll: float = 1.0, timeout: float | None = None) -> dict[str, Any]:
        """Block until the job ends (a tqdm bar shows its progress); the final Batch object."""
        import time

        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.info()["request_counts"]["total"], desc=f"batch {self.id[-8:]}", unit="row")
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                s = self.info()
                c = s["request_counts"]
                if bar is not None:
                    bar.update(c["completed"] + c["failed"] - bar.n)
                if s["status"] in _ENDED:
                    return s
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"batch {self.id} is still {s['status']} after {timeout} s")
                time.sleep(poll)  # polling another process's job: its state is in BODHI_HOME
        finally:
            if bar is not None:
                bar.close()

    def cancel(self) -> dict[str, Any]:
        return self._loop.run(self._ops.batches.cancel(self.id))

    def result(self) -> Any:
        """What `map` returns for the same rows (a list of MapResult, or a DataFrame for pandas
        input, parsed fields included); rows that did not finish say so in `error`."""
        s = self.wait(progress=False)
        _, parse = structured_format(self._rf)
        answers: dict[str, MapResult] = {}
        for key in ("output_file_id", "error_file_id"):
            if s.get(key):
                path = self._loop.run(self._ops.batches.file_path(s[key]))
                for line in path.read_text().splitlines():
                    row = json.loads(line)
                    answers[str(row.get("custom_id"))] = _as_result(row, parse)
        n = s["request_counts"]["total"] if self._rows is None else self._rows.n
        results = [answers.get(_cid(i), MapResult(error=CANCELLED)) for i in range(n)]
        return results if self._output is None else self._output(results, self._rows, self._rf)


def _as_result(row: dict[str, Any], parse: Any) -> MapResult:
    resp = row.get("response") or {}
    body = resp.get("body") if isinstance(resp, dict) else None
    if resp.get("status_code") != 200 or not isinstance(body, dict):
        err = (body or {}).get("error") if isinstance(body, dict) else None
        msg = (err or {}).get("message") if isinstance(err, dict) else None
        return MapResult(error=msg or (row.get("error") or {}).get("message") or "failed")
    try:
        text = body["choices"][0]["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        return MapResult(error="The answer is not a chat completion.")
    out = MapResult(text=text, usage=body.get("usage"))
    if parse is not None:
        try:
            out.parsed = parse(text)
        except Exception as exc:  # noqa: BLE001 - a parse failure is this row's error, as in map
            out.error = getattr(exc, "message", str(exc))
    return out


def submit(ops: Operations, loop: LoopThread, model: str, rows: Any, *, response_format: Any, output: Any,
           **params: Any) -> BatchJob:
    """Write the rows as one batch file, upload it and start the job; its handle."""
    payload, _ = structured_format(response_format)
    body = {k: v for k, v in params.items() if k != "stream"}
    directory = loop.run(_dir(ops))
    fd, name = tempfile.mkstemp(prefix=".map-", suffix=".jsonl", dir=directory)
    with os.fdopen(fd, "w") as f:
        for i in range(rows.n):
            req = {**body, "model": model, "messages": rows.messages(i),
                   **({"response_format": payload} if payload is not None else {})}
            f.write(json.dumps({"custom_id": _cid(i), "method": "POST", "url": "/v1/chat/completions",
                                "body": req}, separators=(",", ":")) + "\n")
    rec = loop.run(ops.batches.add_file(Path(name), f"map-{model.replace('/', '_')}.jsonl", "batch"))
    made = loop.run(ops.batches.create({"input_file_id": rec.id, "endpoint": "/v1/chat/completions",
                                        "completion_window": "24h", "metadata": {"from": "Bodhi.map"}}))
    return BatchJob(ops, loop, made["id"], rows=rows, response_format=response_format, output=output)


async def _dir(ops: Operations) -> Path:
    import asyncio

    return await asyncio.to_thread(ops.batches.upload_dir)


class Batches:
    """Batch jobs of this BODHI_HOME, whichever kernel or server made them."""

    def __init__(self, ops: Operations, loop: LoopThread) -> None:
        self._ops, self._loop = ops, loop

    def __repr__(self) -> str:
        return f"<Batches {len(self.list())} jobs>"

    def list(self, limit: int = 100) -> list[dict[str, Any]]:
        """The Batch objects, newest first."""
        return list(self._loop.run(self._ops.batches.list(limit=limit))["data"])

    def get(self, id: str) -> BatchJob:
        """A job's handle by id (from any kernel); reading it resumes a job nobody runs any more."""
        self._loop.run(self._ops.batches.retrieve(id))
        return BatchJob(self._ops, self._loop, id)
