"""Running batch jobs: here on the map machinery, or at the provider, polled.

**Local jobs** read the input file in chunks in a worker thread (the next chunk is read while
half the current one is still to send), send every line not answered yet through one `MapJob` (operations/_map.py:
the concurrency cap, a shared 429 gate, retries honouring Retry-After), and keep each answer in
batches.sqlite within half a second. A job killed midway resumes from what was kept: only the
requests in flight at the kill are sent again, and the ledger counts those once (their rows
carry the batch row's id as `request_key`).

**Provider jobs** (one OpenAI- or Anthropic-format API model): the gateway uploads the lines
with the upstream model names (Anthropic: translated to Messages requests) and creates the job
there, polls it, fetches the results once and keeps them like a local job's. Either way the
output file is written, ordered by custom_id, when the job ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...objs.dialects import dialect
from ...objs.errors import BodhiError, UpstreamError
from ...services.batch_store import BatchRecord, BatchStore
from ...services.usage import UsageRecord, usage_from_body
from ..gateway import Gateway
from ..model_router import Remote
from ..origin import HubUser, set_hub_user
from ._batch_feed import CHUNK_ROWS, Feed, sendable
from ._map import MapJob, MapResult

__all__ = ["CHUNK_ROWS", "CONCURRENCY", "BatchRunner", "error_line"]

log = logging.getLogger("bodhi_nb.batches")

CONCURRENCY = 64  # requests in flight for a local job
FLUSH_SECONDS = 0.5  # finished answers are kept at least this often
_TERMINAL = ("completed", "failed", "expired", "cancelled")


def _rid(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def ok_line(cid: str, status: int, body: Any) -> dict[str, Any]:
    return {"id": _rid("batch_req"), "custom_id": cid,
            "response": {"status_code": status, "request_id": _rid("req"), "body": body}, "error": None}


def error_line(cid: str | None, exc: BodhiError | None, code: str, message: str, *,
               line: int | None = None) -> dict[str, Any]:
    """One line of the error file: a request the target refused (its status and envelope), or a
    line that was never sent (`response: null`, with what was wrong)."""
    if exc is not None:
        return {"id": _rid("batch_req"), "custom_id": cid,
                "response": {"status_code": exc.status, "request_id": _rid("req"), "body": exc.to_envelope()},
                "error": None}
    return {"id": _rid("batch_req"), "custom_id": cid, "response": None,
            "error": {"code": code, "message": message, **({"line": line} if line is not None else {})}}


class BatchRunner:
    """The jobs this process runs, one task each."""

    def __init__(self, gateway: Gateway, store: BatchStore, *, poll_seconds: float = 30.0) -> None:
        self._gateway = gateway
        self._store = store
        self.poll_seconds = poll_seconds
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._jobs: dict[str, MapJob] = {}

    def start(self, batch_id: str) -> None:
        """Run the job here unless this process already does (another live process holding its
        lease is checked by the task itself)."""
        task = self._tasks.get(batch_id)
        if task is None or task.done():
            self._tasks[batch_id] = asyncio.ensure_future(self._run(batch_id))

    async def aclose(self) -> None:
        for job in self._jobs.values():
            job.stop()
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        for batch_id in list(self._tasks):
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._store.release, batch_id)

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        rec = await asyncio.to_thread(self._store.batch, batch_id)
        if rec.status in _TERMINAL:
            return rec.public
        rec.public.update(status="cancelling", cancelling_at=int(time.time()))
        await asyncio.to_thread(self._store.put_batch, rec)
        job = self._jobs.get(batch_id)
        if job is not None:
            job.stop()
        if rec.private.get("remote_id"):
            with contextlib.suppress(BodhiError):
                await self._remote(rec).cancel()
        self.start(batch_id)  # whoever runs it finishes the cancel (here if nobody does)
        return rec.public

    # -- one job ------------------------------------------------------------------------------

    async def _run(self, batch_id: str) -> None:
        if not await asyncio.to_thread(self._store.claim, batch_id):
            return  # another live process runs it
        try:
            rec = await asyncio.to_thread(self._store.batch, batch_id)
            if rec.private.get("owner"):  # its rows and budgets are its maker's, also when resumed after a restart
                set_hub_user(HubUser(rec.private["owner"], tuple(rec.private.get("groups") or ())))
            if rec.status not in _TERMINAL:
                if rec.private.get("runs", "local") == "local":
                    await self._run_local(rec)
                else:
                    await self._run_remote(rec)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a job's failure is its status, never the server's
            log.warning("bodhi_nb batch %s failed: %s", batch_id, exc)
            await self._fail(batch_id, getattr(exc, "message", str(exc)))
        finally:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._store.release, batch_id)
            self._jobs.pop(batch_id, None)

    async def _fail(self, batch_id: str, message: str) -> None:
        rec = await asyncio.to_thread(self._store.batch, batch_id)
        rec.public.update(status="failed", failed_at=int(time.time()),
                          errors={"object": "list", "data": [{"code": "batch_failed", "message": message[:500]}]})
        await asyncio.to_thread(self._store.put_batch, rec)

    async def _finish(self, rec: BatchRecord) -> None:
        """Write the output and error files, ordered by custom_id, and close the job."""
        cancelled = (await asyncio.to_thread(self._store.batch, rec.id)).status == "cancelling"
        rec.public.update(status="finalizing", finalizing_at=int(time.time()))
        await asyncio.to_thread(self._store.put_batch, rec)
        owner = rec.private.get("owner")  # the output belongs to whoever made the batch (the hub service)
        out = await asyncio.to_thread(self._store.write_results, rec.id, True, owner)
        err = await asyncio.to_thread(self._store.write_results, rec.id, False, owner)
        ok, bad = await asyncio.to_thread(self._store.counts, rec.id)
        now = int(time.time())
        rec.public.update(output_file_id=out.id if out else None, error_file_id=err.id if err else None,
                          request_counts={**rec.public["request_counts"], "completed": ok, "failed": bad})
        rec.public.update({"status": "cancelled", "cancelled_at": now} if cancelled
                          else {"status": "completed", "completed_at": now})
        await asyncio.to_thread(self._store.put_batch, rec)

    # -- here, on the map machinery --------------------------------------------------------------

    async def _run_local(self, rec: BatchRecord) -> None:
        done = await asyncio.to_thread(self._store.done_ids, rec.id)
        counts = rec.public["request_counts"]  # kept up to date as answers are kept
        counts["completed"], counts["failed"] = await asyncio.to_thread(self._store.counts, rec.id)
        pending: list[tuple[str, bool, dict[str, Any]]] = []  # finished rows not yet kept: (custom_id, ok, line)
        endpoint = rec.public["endpoint"].removeprefix("/v1/")

        lock = asyncio.Lock()  # one keep at a time: the flusher's and the last one never interleave

        async def keep() -> None:
            async with lock:
                await _keep()

        async def _keep() -> None:
            rows, pending[:] = list(pending), []
            if rows:
                # The ledger's rows first: an answer kept here is never sent again, so its usage row
                # must already be in the file (one sent again after a crash is keyed: counted once).
                if self._gateway.ledger is not None:
                    await asyncio.to_thread(self._gateway.ledger.flush)
                ok, bad = await asyncio.to_thread(self._store.add_results, rec.id, rows)
                counts.update(completed=counts["completed"] + ok, failed=counts["failed"] + bad)
                await asyncio.to_thread(self._store.put_batch, rec)

        stop = asyncio.Event()

        async def flusher() -> None:
            while not stop.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), FLUSH_SECONDS)
                await keep()

        feed = Feed(self._store, rec, done)
        flush = asyncio.ensure_future(flusher())
        try:
            await self._send(rec, endpoint, feed, pending)
        finally:
            # Never cancelled mid-write: a keep cut short would leave answers neither kept nor pending
            # (they were written after the output file, which then lacked them).
            stop.set()
            await flush
        await keep()
        await self._finish(rec)

    async def _send(self, rec: BatchRecord, endpoint: str, feed: Feed,
                    pending: list[tuple[str, bool, dict[str, Any]]]) -> None:
        async def on_row(i: int, result: MapResult, data: Any, exc: BodhiError | None) -> None:
            cid = feed.done(i)
            if data is not None and result.error is None:
                pending.append((cid, True, ok_line(cid, 200, data)))
            else:
                pending.append((cid, False, error_line(cid, exc, "request_failed", result.error or "failed")))

        # One job over the whole file, fed as it is read: its 64 requests stay in flight across chunk
        # boundaries. No response cache here: a job resumes from its own kept answers, and the
        # cache's lookup and write cost a fifth of the gateway's time per row (benchmarks/README.md).
        job = MapJob(self._gateway, 0, lambda i: [], {}, concurrency=CONCURRENCY, max_retries=4,
                     cache=False, parse=None, take=feed.take,
                     bodies=lambda i: ({**feed.body(i), "stream": False}, f"{rec.id}:{feed.cid(i)}"),
                     on_row=on_row, keep=False, surface="batch", endpoint=endpoint)
        self._jobs[rec.id] = job
        await job.run()
        feed.check()

    # -- at the provider -------------------------------------------------------------------

    def _remote(self, rec: BatchRecord) -> _Remote:
        return _Remote(self._gateway, self._store, rec)

    async def _run_remote(self, rec: BatchRecord) -> None:
        remote = self._remote(rec)
        if not rec.private.get("remote_id"):
            try:
                await remote.submit()
            except BodhiError as exc:
                if exc.status not in (404, 405, 501):
                    raise
                # An OpenAI-compatible provider without a Files/Batches API (vLLM, Ollama, ...): run here.
                rec.private.update(runs="local", provider_batch=f"unavailable ({exc.status})")
                rec.public.update(status="in_progress", in_progress_at=int(time.time()))
                await asyncio.to_thread(self._store.put_batch, rec)
                await self._run_local(rec)
                return
            await asyncio.to_thread(self._store.put_batch, rec)
        while True:
            state = await remote.poll()
            await asyncio.to_thread(self._store.put_batch, rec)
            if state in _TERMINAL or state == "ended":
                break
            await asyncio.sleep(self.poll_seconds)
        if state in ("failed", "expired"):
            raise UpstreamError(f"The provider's batch {rec.private['remote_id']} {state}.")
        await remote.fetch_results()
        if state == "cancelled" and rec.status != "cancelling":
            rec.public.update(status="cancelling", cancelling_at=int(time.time()))
            await asyncio.to_thread(self._store.put_batch, rec)
        await self._finish(rec)


class _Remote:
    """One job at a provider: submit, poll, fetch results (OpenAI Batch or Anthropic Message Batches)."""

    def __init__(self, gateway: Gateway, store: BatchStore, rec: BatchRecord) -> None:
        self._gateway, self._store, self.rec = gateway, store, rec
        self.fmt = str(rec.private["runs"])

    async def _target(self) -> Any:
        dest = await self._gateway.destination(self.rec.private["models"][0])
        assert isinstance(dest, Remote)
        return await self._gateway.remote_target(dest)

    async def submit(self) -> None:
        """Create the job at the provider. Its batch API is asked for first (one listing of a
        single job), so a provider without one costs no copy and upload of the whole file: its 404
        (or 501) runs the job here. A 405 says the path exists without a listing: create anyway."""
        target = await self._target()
        up = self._gateway.upstream
        listing = "batches?limit=1" if self.fmt == "openai" else "messages/batches?limit=1"
        try:
            await up.get_json(target, listing, headers=None if self.fmt == "openai" else self._ant_headers(target))
        except BodhiError as exc:
            if exc.status != 405:
                raise
        if self.fmt == "openai":
            tmp = await asyncio.to_thread(self._openai_file, target.model)
            try:
                f = await up.upload_file(target, "files", tmp, "batch_input.jsonl", {"purpose": "batch"})
            finally:
                tmp.unlink(missing_ok=True)
            made = await up.post_json(target, "batches", {"input_file_id": f["id"], "completion_window": "24h",
                                                          "endpoint": self.rec.public["endpoint"]})
            self.rec.private.update(remote_id=made["id"], remote_file_id=f["id"])
        else:
            # (one request body holds every line: the one place a job holds all its input in memory)
            requests = await asyncio.to_thread(self._anthropic_requests, target.model)
            made = await up.post_json(target, "messages/batches", {"requests": requests},
                                      headers=self._ant_headers(target))
            self.rec.private.update(remote_id=made["id"])
        self.rec.public.update(status="in_progress", in_progress_at=int(time.time()))

    def _lines(self, model: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """The lines to send, read as they are written out (a 100,000-line file is never held)."""
        done = self._store.done_ids(self.rec.id)  # the lines already in the error file
        for cid, body in sendable(self._store, self.rec.public["input_file_id"], done):
            yield cid, {**body, "model": model}

    def _openai_file(self, model: str) -> Path:
        fd, name = tempfile.mkstemp(prefix=".upload-", suffix=".jsonl", dir=self._store.dir)
        with open(fd, "w") as out:
            for cid, body in self._lines(model):
                out.write(json.dumps({"custom_id": cid, "method": "POST", "url": self.rec.public["endpoint"],
                                      "body": body}, separators=(",", ":")) + "\n")
        return Path(name)

    def _anthropic_requests(self, model: str) -> list[dict[str, Any]]:
        return [{"custom_id": cid, "params": dialect("anthropic").chat_to_request(body, model=model)}
                for cid, body in self._lines(model)]

    async def poll(self) -> str:
        target = await self._target()
        rid = self.rec.private["remote_id"]
        if self.fmt == "openai":
            b = await self._gateway.upstream.get_json(target, f"batches/{rid}")
            counts = b.get("request_counts") or {}
            self.rec.public["request_counts"].update(completed=int(counts.get("completed") or 0))
            self.rec.private.update(output=b.get("output_file_id"), errors=b.get("error_file_id"))
            status = str(b.get("status"))
            if status not in _TERMINAL and status != "cancelling":
                self.rec.public["status"] = status
            return status
        b = await self._gateway.upstream.get_json(target, f"messages/batches/{rid}", headers=self._ant_headers(target))
        counts = b.get("request_counts") or {}
        self.rec.public["request_counts"].update(completed=int(counts.get("succeeded") or 0))
        self.rec.private.update(results_url=b.get("results_url"))
        return str(b.get("processing_status"))

    def _ant_headers(self, target: Any) -> dict[str, str]:
        return dialect("anthropic").wire(model=target.model, stream=False, api_key=target.api_key).headers

    async def fetch_results(self) -> None:
        """The provider's results, fetched once and kept as this job's own (model names as asked)."""
        target = await self._target()
        up = self._gateway.upstream
        asked = self.rec.private["models"][0]
        rows: list[tuple[str, bool, dict[str, Any]]] = []
        if self.fmt == "openai":
            for key, ok in (("output", True), ("errors", False)):
                fid = self.rec.private.get(key)
                if not fid:
                    continue
                for raw in (await up.get_bytes(target, f"files/{fid}/content")).splitlines():
                    if raw.strip():
                        line = json.loads(raw)
                        body = (line.get("response") or {}).get("body")
                        if isinstance(body, dict) and "model" in body:
                            body["model"] = asked
                        status = (line.get("response") or {}).get("status_code")
                        rows.append((str(line.get("custom_id")), ok and status == 200, line))
        else:
            d = dialect("anthropic")
            url = str(self.rec.private.get("results_url") or "")
            path = url.split("/v1/", 1)[1] if "/v1/" in url else f"messages/batches/{self.rec.private['remote_id']}/results"
            for raw in (await up.get_bytes(target, path, headers=self._ant_headers(target))).splitlines():
                if not raw.strip():
                    continue
                line = json.loads(raw)
                cid, result = str(line.get("custom_id")), line.get("result") or {}
                if result.get("type") == "succeeded":
                    rows.append((cid, True, ok_line(cid, 200, d.response_to_chat(result["message"], model=asked))))
                else:
                    err = d.upstream_error(400, result.get("error") or {}) or {"message": str(result.get("type"))}
                    exc = UpstreamError(str(err.get("message")))
                    rows.append((cid, False, error_line(cid, exc, "request_failed", exc.message)))
        await asyncio.to_thread(self._store.add_results, self.rec.id, rows)
        self._ledger(target, rows)

    def _ledger(self, target: Any, rows: list[tuple[str, bool, dict[str, Any]]]) -> None:
        """One ledger row per answered request, as a local job records them (keyed, so fetching the
        results again after a crash counts nothing twice)."""
        ledger = self._gateway.ledger
        if ledger is None:
            return
        dest_id = str(target.label).removeprefix("API model '").rstrip("'")
        for cid, ok, line in rows:
            body = (line.get("response") or {}).get("body") or {}
            usage = usage_from_body(body) if ok else None
            ledger.record(UsageRecord(
                model=self.rec.private["models"][0], surface="batch", provider=dest_id, upstream_model=target.model,
                status=int((line.get("response") or {}).get("status_code") or (200 if ok else 502)),
                error_code=None if ok else "request_failed",
                prompt_tokens=usage.prompt_tokens if usage else None,
                completion_tokens=usage.completion_tokens if usage else None,
                total_tokens=usage.total_tokens if usage else None, request_key=f"{self.rec.id}:{cid}" if ok else None,
                hub_user=self.rec.private.get("owner"), hub_groups=tuple(self.rec.private.get("groups") or ())))

    async def cancel(self) -> None:
        target = await self._target()
        rid = self.rec.private["remote_id"]
        if self.fmt == "openai":
            await self._gateway.upstream.post_json(target, f"batches/{rid}/cancel", {})
        else:
            await self._gateway.upstream.post_json(target, f"messages/batches/{rid}/cancel", {},
                                                   headers=self._ant_headers(target))
