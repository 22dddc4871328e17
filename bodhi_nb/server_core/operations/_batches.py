"""Files and batch jobs, OpenAI-compatible (`bodhi/v1/files`, `bodhi/v1/batches`), for every target.

A batch names its requests in a JSONL file, one `{"custom_id", "method", "url", "body"}` per
line. Creating it checks every line (a bad line goes to the error file, never stops the
others), resolves every model named (an unknown one is a 404 before anything runs), and picks
where it runs: an OpenAI-format API model uses the provider's own Batch API, an Anthropic-format
one its Message Batches (half price, within 24 hours; the key stays in the gateway), and
anything else, local models included, runs here in the background on the `map` machinery
(operations/_map.py: the concurrency cap, retries honouring Retry-After, the response cache).
Every job's state lives in `$BODHI_HOME/batches.sqlite` (services/batch_store.py), so a new
kernel or a restarted server picks a job up by id and a local job goes on where it stopped
(operations/_batch_run.py).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...objs.errors import InvalidRequestError, ModelNotFound, NotFoundError
from ...services.batch_store import BatchRecord, BatchStore, FileRecord
from ..contract import BatchCreateRequest, parse
from ..gateway import Gateway
from ..model_router import Remote
from ._batch_run import BatchRunner, error_line
from ._estimate import EstimateOps
from ._owners import Owners

__all__ = ["DEFAULT_MAX_FILE_BYTES", "BatchOps", "LineProblem"]

DEFAULT_MAX_FILE_BYTES = 200 * 1024 * 1024  # OpenAI's own limit for a batch input file
_PURPOSES = ("batch", "user_data", "batch_output")
MAX_REPORTED_PROBLEMS = 1000  # bad lines listed in the Batch's `errors` (all go to the error file)

LineProblem = tuple[int, str | None, str]  # (line number, custom_id, what is wrong)


def _now() -> int:
    return int(time.time())


class BatchOps:
    """Upload, list, read and delete files; create, read, list and cancel batches."""

    def __init__(self, gateway: Gateway, store: BatchStore, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
                 poll_seconds: float = 30.0, estimate: EstimateOps | None = None, owners: Owners | None = None
                 ) -> None:
        self._gateway = gateway
        self._owners = owners or Owners()
        self._estimate = estimate
        self.store = store
        self.max_file_bytes = max_file_bytes
        self.runner = BatchRunner(gateway, store, poll_seconds=poll_seconds)

    # -- files ------------------------------------------------------------------------------

    def upload_dir(self) -> Path:
        """Where an upload is written as it arrives (then moved into place by `add_file`)."""
        self.store.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self.store.dir

    async def add_file(self, tmp: Path, filename: str, purpose: str) -> FileRecord:
        if purpose not in _PURPOSES:
            await asyncio.to_thread(tmp.unlink, True)
            raise InvalidRequestError(f"purpose must be one of {', '.join(_PURPOSES)}.", param="purpose")
        return await asyncio.to_thread(self.store.add_file, self.store.new_file_id(), filename, purpose, tmp,
                                       self._owners.current())

    async def file(self, id: str) -> FileRecord:
        return await asyncio.to_thread(self.store.file, id, **self._owners.scope())

    async def files(self, purpose: str | None = None) -> list[FileRecord]:
        return await asyncio.to_thread(self.store.files, purpose, **self._owners.scope())

    async def file_path(self, id: str) -> Path:
        rec = await self.file(id)
        return self.store.file_path(rec.id)

    async def delete_file(self, id: str) -> None:
        await asyncio.to_thread(self.store.delete_file, id, **self._owners.scope())

    # -- batches ----------------------------------------------------------------------------

    async def create(self, body: object) -> dict[str, Any]:
        """Check the file, resolve its models, and start the job; the Batch object."""
        req = parse(BatchCreateRequest, body)
        await self.file(req.input_file_id)
        models, problems, total = await asyncio.to_thread(self._scan, req.input_file_id, req.endpoint)
        if total == 0:
            raise InvalidRequestError("The input file has no lines.", param="input_file_id", code="empty_file")
        dests = {}
        for m in sorted(models):
            try:
                dests[m] = await self._gateway.destination(m)
            except ModelNotFound as exc:
                raise ModelNotFound(f"Line model '{m}' is not served by any API model or local alias; no request "
                                    "was sent.") from exc
        await self._check_budget(req.input_file_id, dests)
        where = "local"
        if len(dests) == 1 and req.endpoint == "/v1/chat/completions":
            dest = next(iter(dests.values()))
            if isinstance(dest, Remote) and dest.api_alias.api_format.value in ("openai", "anthropic"):
                where = dest.api_alias.api_format.value
        now = _now()
        public = {"id": f"batch_{secrets.token_hex(12)}", "object": "batch", "endpoint": req.endpoint,
                  "input_file_id": req.input_file_id, "completion_window": req.completion_window,
                  "status": "validating" if where != "local" else "in_progress", "created_at": now,
                  "in_progress_at": now if where == "local" else None, "expires_at": now + 24 * 3600,
                  "finalizing_at": None, "completed_at": None, "failed_at": None, "expired_at": None,
                  "cancelling_at": None, "cancelled_at": None, "output_file_id": None, "error_file_id": None,
                  "errors": _errors(problems) if problems else None, "metadata": req.metadata,
                  "request_counts": {"total": total, "completed": 0, "failed": len(problems)}}
        rec = BatchRecord(public, {"runs": where, "models": sorted(models), "owner": self._owners.current(),
                                   "groups": list(self._owners.groups())})
        await asyncio.to_thread(self._start, rec, problems)
        self.runner.start(rec.id)
        return public

    async def _check_budget(self, file_id: str, dests: dict[str, Any]) -> None:
        """A job whose estimate is above what is left of today's budget is refused before it
        starts, naming both numbers (with a budget in force, for a file of one model; the file is
        read as the estimate goes, never held in memory)."""
        ledger = self._gateway.ledger
        if ledger is None:
            return
        user, groups = self._owners.current(), self._owners.groups()
        for model, dest in dests.items():  # a user or group whose budget is spent starts no job (hub service)
            if isinstance(dest, Remote):
                await asyncio.to_thread(ledger.check_budget, model, dest.upstream_model, dest.api_alias.id,
                                        user=user, groups=groups)
            elif not isinstance(dest, Remote) and user is not None:
                await asyncio.to_thread(ledger.check_budget, model, None, "local", user=user, groups=groups)
        if self._estimate is None or len(dests) != 1:
            return
        if (await asyncio.to_thread(ledger.budget)).daily_usd is None:
            return
        model, dest = next(iter(dests.items()))
        cap = await asyncio.to_thread(self._first_cap, file_id)
        batch = isinstance(dest, Remote) and dest.api_alias.api_format.value in ("openai", "anthropic")
        est = await self._estimate.estimate(model, self._messages(file_id), max_tokens=cap, batch=batch)
        self._estimate.check_budget(est)

    def _messages(self, file_id: str) -> Iterator[list[dict[str, Any]]]:
        for _, raw in self.store.lines(file_id):
            try:
                body = json.loads(raw)["body"]
            except (ValueError, KeyError, TypeError):
                continue
            if isinstance(body, dict) and isinstance(body.get("messages"), list):
                yield body["messages"]

    def _first_cap(self, file_id: str) -> int | None:
        """The output cap the lines ask for (the first line's; the estimate uses one for all)."""
        for _, raw in self.store.lines(file_id):
            try:
                body = json.loads(raw)["body"]
            except (ValueError, KeyError, TypeError):
                continue
            cap = body.get("max_completion_tokens", body.get("max_tokens")) if isinstance(body, dict) else None
            return cap if isinstance(cap, int) and not isinstance(cap, bool) else None
        return None

    def _start(self, rec: BatchRecord, problems: list[LineProblem]) -> None:
        self.store.put_batch(rec)
        self.store.add_results(rec.id, [(cid if cid is not None else f"~line-{n:09d}", False,
                                         error_line(cid, None, "invalid_request", msg, line=n))
                                        for n, cid, msg in problems])

    def _scan(self, file_id: str, endpoint: str) -> tuple[set[str], list[LineProblem], int]:
        """Every line checked, as OpenAI checks them: the models named by the valid ones, the
        problems of the others, and how many lines there are (blank lines are not lines)."""
        models: set[str] = set()
        problems: list[LineProblem] = []
        seen: set[str] = set()
        total = 0
        for n, raw in self.store.lines(file_id):
            if not raw.strip():
                continue
            total += 1
            cid, problem, model = _check_line(raw, endpoint, seen)
            if problem is not None:
                problems.append((n, cid, problem))
                continue
            assert cid is not None and model is not None
            seen.add(cid)
            models.add(model)
        return models, problems, total

    async def _batch(self, id: str) -> BatchRecord:
        rec = await asyncio.to_thread(self.store.batch, id)
        if not self._owners.sees(rec.private.get("owner")):
            raise NotFoundError(f"No batch with id '{id}'.", param="batch_id", code="batch_not_found")
        return rec

    async def retrieve(self, id: str) -> dict[str, Any]:
        rec = await self._batch(id)
        if rec.status in ("validating", "in_progress", "finalizing", "cancelling"):
            self.runner.start(id)  # nobody runs it (the process that did is gone): go on here
        return rec.public

    async def list(self, after: str | None = None, limit: int = 20) -> dict[str, Any]:
        if not 1 <= limit <= 100:
            raise InvalidRequestError("limit must be from 1 to 100.", param="limit")
        recs = [r.public for r in await asyncio.to_thread(self.store.batches)
                if self._owners.sees(r.private.get("owner"))]
        if after is not None:
            ids = [r["id"] for r in recs]
            recs = recs[ids.index(after) + 1:] if after in ids else []
        page = recs[:limit]
        return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None, "has_more": len(recs) > limit}

    async def cancel(self, id: str) -> dict[str, Any]:
        await self._batch(id)
        return await self.runner.cancel(id)

    async def resume(self) -> int:
        """Start every unfinished job no live process runs (the server does this at start)."""
        recs = await asyncio.to_thread(self.store.batches)
        n = 0
        for r in recs:
            if r.status in ("validating", "in_progress", "finalizing", "cancelling"):
                self.runner.start(r.id)
                n += 1
        return n

    async def aclose(self) -> None:
        await self.runner.aclose()


def _check_line(raw: bytes, endpoint: str, seen: set[str]) -> tuple[str | None, str | None, str | None]:
    """(custom_id, problem or None, model) of one input line."""
    try:
        line = json.loads(raw)
    except ValueError:
        return None, "This line is not valid JSON.", None
    if not isinstance(line, dict):
        return None, "A line must be a JSON object.", None
    cid = line.get("custom_id")
    if not isinstance(cid, str) or not cid:
        return None, "custom_id must be a non-empty string.", None
    extra = set(line) - {"custom_id", "method", "url", "body"}
    if extra:
        return cid, f"Unknown fields: {', '.join(sorted(extra))}.", None
    if cid in seen:
        return cid, f"custom_id '{cid}' is used by an earlier line; every custom_id must be unique.", None
    if line.get("method") != "POST":
        return cid, "method must be POST.", None
    if line.get("url") != endpoint:
        return cid, f"url must be the batch's endpoint, {endpoint}.", None
    body = line.get("body")
    if not isinstance(body, dict) or not isinstance(body.get("model"), str) or not body["model"]:
        return cid, "body must be an object with a model.", None
    if body.get("stream") is True:
        return cid, "A batch request cannot stream.", None
    return cid, None, str(body["model"])


def _errors(problems: list[LineProblem]) -> dict[str, Any]:
    return {"object": "list", "data": [{"code": "invalid_request", "message": msg, "param": None, "line": n}
                                       for n, _, msg in problems[:MAX_REPORTED_PROBLEMS]]}

