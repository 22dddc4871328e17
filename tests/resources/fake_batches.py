"""A small real provider-batch server on 127.0.0.1 for tests: OpenAI Files + Batches and Anthropic
Message Batches on one port (the remote-provider edge of batch jobs, issue #21).

Run: python fake_batches.py [--key KEY]  -> prints "PORT <n>" once listening.
Files and batches live in memory. Nothing advances by time: a batch moves one step each time
its own GET (retrieve) is answered, so a poller sees every state, deterministically.

OpenAI (`Authorization: Bearer KEY`, else 401 in OpenAI's envelope
`{"error": {message, type, param, code}}`; without --key any non-empty key is accepted):
  POST   /v1/files                multipart/form-data, fields `purpose` (must be "batch") and `file`
                                  (a name ending .jsonl); answers the FileObject (status "processed")
  GET    /v1/files                list (newest first; `after`, `limit` (default 10000) and
                                  `purpose` honoured)
  GET    /v1/files/{id}           the FileObject;  GET /v1/files/{id}/content the raw bytes
  DELETE /v1/files/{id}           {"id", "object": "file", "deleted": true}
  POST   /v1/batches              JSON {input_file_id, endpoint, completion_window, metadata?,
                                  output_expires_after?}; any other field, an endpoint other than
                                  /v1/chat/completions, /v1/embeddings, /v1/responses, a window other
                                  than "24h", or an input file that is missing or not purpose batch: 400
  GET    /v1/batches/{id}         the Batch, advanced one step first (see below)
  POST   /v1/batches/{id}/cancel  validating/in_progress/finalizing -> "cancelling" (request_counts
                                  kept); the next GET -> "cancelled"; a batch already ended: 409
  GET    /v1/batches              list, newest first; `after` and `limit` (1-100, default 20)
  The input file is validated, line by line, when the batch is created: each line must be a JSON
  object with exactly custom_id (a non-empty string, unique in the file), method ("POST"), url
  (the batch's endpoint) and body (an object with a string model). Line numbers count from 1.
  Steps, one per GET of the batch:
    validating  -> failed       when no line is valid (errors.data: one {code, line, message,
                                param} per line, failed_at set), else
    validating  -> in_progress  (request_counts.total = the number of lines)
    in_progress -> finalizing   every valid line is processed now (once); a batch with a line of
                                model "hold" stays in_progress until it is cancelled
    finalizing  -> completed    output and error files written, usage summed
    cancelling  -> cancelled    files written for whatever was processed before the cancel
  Output file (purpose "batch_output", id in output_file_id; null when no request succeeded):
  one line per successful request, {"id": "batch_req_...", "custom_id", "response":
  {"status_code": 200, "request_id", "body"}, "error": null}, in REVERSE of input order on
  purpose (OpenAI promises no order: clients must match by custom_id). Bodies by endpoint:
  chat.completion "echo: <last user text>" with usage; an embedding list (8 dimensions from the
  text's SHA-256, as fake_openai.py); a Response with one output_text "echo: <last user text>".
  Error file (error_file_id; null when nothing failed), also reversed: each bad line as
  {"id", "custom_id" (null if unreadable), "response": null, "error": {code, message}}, and each
  request of model status-NNN as {"id", "custom_id", "response": {"status_code": NNN,
  "request_id", "body": {"error": {...}}}, "error": null}.
  request_counts: completed = successful requests, failed = bad lines + status-NNN requests.

Anthropic (`x-api-key: KEY`, else 401 authentication_error; `anthropic-version: 2023-06-01`,
else 400; errors in Anthropic's envelope `{"type": "error", "error": {type, message},
"request_id"}`):
  POST   /v1/messages/batches     JSON {"requests": [{"custom_id", "params"}]}: at create, a 400 for
                                  another top-level or per-request field, an empty list, a custom_id
                                  not matching ^[a-zA-Z0-9_-]{1,64}$ or repeated, params that is not
                                  an object, or params without a string model, an integer
                                  max_tokens >= 1 and a non-empty messages list. The rest of params
                                  is checked as fake_anthropic.py checks a Messages request, at
                                  processing time, as Anthropic documents ("validation errors are
                                  returned when processing of the entire batch has ended"): an
                                  errored result. Answers the MessageBatch, "in_progress".
  GET    /v1/messages/batches/{id}  the MessageBatch; the first GET still answers in_progress, the
                                  second ends it: processing_status "ended", ended_at, request_counts
                                  (succeeded / errored / canceled) and results_url
                                  (http://<this host>/v1/messages/batches/{id}/results). A batch with
                                  a request of model "hold" stays in_progress until cancelled.
  GET    .../{id}/results          JSONL, in REVERSE of request order: {"custom_id", "result":
                                  {"type": "succeeded", "message": <Message "echo: <last user
                                  text>", with usage>}}; a model status-NNN (e.g. status-400) gives
                                  {"type": "errored", "error": {"type": "error", "error": {"type":
                                  <the status's error type>, "message"}}}; params that fail the
                                  Messages checks give errored invalid_request_error; canceled
                                  requests {"type": "canceled"}. Before the batch ends: 400.
  POST   .../{id}/cancel           in_progress -> "canceling" (cancel_initiated_at); the next GET
                                  ends it with every request canceled; an ended batch: 400
  DELETE /v1/messages/batches/{id}  {"id", "type": "message_batch_deleted"} once ended, else 400
  GET    /v1/messages/batches      list, newest first; limit (1-1000, default 20), after_id, before_id

Both: unknown ids are a 404 in the provider's envelope; any other path is a 404.
GET /_state returns a summary for assertions: {"files": {id: {filename, purpose, bytes, lines}},
"batches": {id: {provider, status, request_counts, polls}}, "processed": {custom_id: times a
request with that id was processed (given a result other than canceled), over all batches},
"last": {method, path, query, headers, body} of the last request (before the key check; a
multipart body as {"form": {...}, "files": {field: {filename, bytes}}})}. DELETE /_state clears
everything.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import tornado.web

try:  # run as a script (start_fake), this folder is on sys.path
    from fake_anthropic import STATUS_TYPE, VERSION, Invalid, check_body, input_tokens, reply
    from fake_openai import embedding, text_of
except ImportError:  # imported as tests.resources.fake_batches
    from tests.resources.fake_anthropic import STATUS_TYPE, VERSION, Invalid, check_body, input_tokens, reply
    from tests.resources.fake_openai import embedding, text_of

ENDPOINTS = ("/v1/chat/completions", "/v1/embeddings", "/v1/responses")
BATCH_FIELDS = {"input_file_id", "endpoint", "completion_window", "metadata", "output_expires_after"}
LINE_FIELDS = ("custom_id", "method", "url", "body")
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
ENDED = {"completed", "failed", "expired", "cancelled"}

FILES: dict[str, dict] = {}  # id -> {"meta": FileObject, "content": bytes}
BATCHES: dict[str, dict] = {}  # OpenAI: id -> {"obj": Batch, "lines": [...], "results": ...}
MSG_BATCHES: dict[str, dict] = {}  # Anthropic: id -> {"obj": MessageBatch, "requests": [...], ...}
PROCESSED: Counter = Counter()
LAST: dict = {}


def reset() -> None:
    for store in (FILES, BATCHES, MSG_BATCHES, PROCESSED, LAST):
        store.clear()


def new_id(prefix: str, n: int = 24) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(n))


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def jsonl(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


class Refused(Exception):
    """A request the provider answers with an error status (default 400)."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


class Base(tornado.web.RequestHandler):
    """Records the request in LAST, checks the provider's auth, answers Refused in its envelope."""

    provider = "openai"

    def prepare(self) -> None:
        LAST.clear()
        LAST.update(method=self.request.method, path=self.request.path, query=self.request.query,
                    headers=dict(self.request.headers), body=self._body_summary())
        if self.provider == "openai":
            key = self.request.headers.get("Authorization", "")
            want = self.settings.get("api_key")
            if not key.startswith("Bearer ") or not key[7:] or (want and key != f"Bearer {want}"):
                self.fail(Refused("Incorrect API key provided.", 401, code="invalid_api_key"))
        else:
            key = self.request.headers.get("x-api-key")
            want = self.settings.get("api_key")
            if not key or (want and key != want):
                self.fail(Refused("invalid x-api-key", 401))
            elif self.request.headers.get("anthropic-version") != VERSION:
                self.fail(Refused(f"anthropic-version: header is required and must be {VERSION} on this server"))

    def _body_summary(self) -> Any:
        ctype = self.request.headers.get("Content-Type", "")
        if ctype.startswith("multipart/form-data"):
            return {"form": {k: [v.decode(errors="replace") for v in vs] for k, vs in self.request.body_arguments.items()},
                    "files": {k: {"filename": f[0].filename, "bytes": len(f[0].body)} for k, f in self.request.files.items()}}
        if not self.request.body:
            return None
        try:
            return json.loads(self.request.body)
        except ValueError:
            return self.request.body.decode(errors="replace")

    def json_body(self) -> Any:
        try:
            return json.loads(self.request.body)
        except ValueError:
            raise Refused("We could not parse the JSON body of your request." if self.provider == "openai"
                          else "The request body is not valid JSON.") from None

    def fail(self, err: Refused) -> None:
        self.set_status(err.status)
        if self.provider == "openai":
            kind = "invalid_request_error" if err.status < 500 else "server_error"
            self.finish({"error": {"message": str(err), "type": kind, "param": err.param, "code": err.code}})
        else:
            self.finish({"type": "error", "error": {"type": STATUS_TYPE.get(err.status, "api_error"), "message": str(err)},
                         "request_id": new_id("req_fake")})

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        self.fail(exc if isinstance(exc, Refused) else Refused(f"fake server: {exc}", status_code))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if not isinstance(value, Refused):  # a Refused is an answer, not a fault
            super().log_exception(typ, value, tb)


# -- OpenAI: files ------------------------------------------------------------------------------

def file_object(fid: str) -> dict:
    return FILES[fid]["meta"]


def store_file(content: bytes, filename: str, purpose: str, expires_at: int | None = None) -> dict:
    fid = new_id("file-")
    meta = {"id": fid, "object": "file", "bytes": len(content), "created_at": int(time.time()), "filename": filename,
            "purpose": purpose, "status": "processed", "expires_at": expires_at, "status_details": None}
    FILES[fid] = {"meta": meta, "content": content}
    return meta


def get_file(fid: str) -> dict:
    if fid not in FILES:
        raise Refused(f"No such File object: {fid}", 404, param="id")
    return FILES[fid]


class Files(Base):
    def post(self) -> None:
        purpose = self.get_body_argument("purpose", None)
        uploads = self.request.files.get("file")
        if not uploads:
            raise Refused("Missing required parameter: 'file'.", param="file", code="missing_required_parameter")
        if purpose is None:
            raise Refused("Missing required parameter: 'purpose'.", param="purpose", code="missing_required_parameter")
        if purpose != "batch":
            raise Refused(f"Invalid value for 'purpose': this fake stores batch files only, not '{purpose}'.",
                          param="purpose")
        upload = uploads[0]
        if not upload.filename.endswith(".jsonl"):
            raise Refused(f"Invalid file format for Batch API. Must be .jsonl, got '{upload.filename}'.", param="file")
        expires_at = None
        seconds = self.get_body_argument("expires_after[seconds]", None)
        if seconds is not None:
            expires_at = int(time.time()) + int(seconds)
        self.finish(store_file(upload.body, upload.filename, purpose, expires_at))

    def get(self) -> None:
        purpose = self.get_query_argument("purpose", None)
        rows = [f["meta"] for f in reversed(FILES.values()) if purpose in (None, f["meta"]["purpose"])]
        self.finish(page(rows, self.get_query_argument("after", None), int(self.get_query_argument("limit", "10000"))))


class FileOne(Base):
    def get(self, fid: str) -> None:
        self.finish(get_file(fid)["meta"])

    def delete(self, fid: str) -> None:
        get_file(fid)
        del FILES[fid]
        self.finish({"id": fid, "object": "file", "deleted": True})


class FileContent(Base):
    def get(self, fid: str) -> None:
        self.set_header("Content-Type", "application/octet-stream")
        self.finish(get_file(fid)["content"])


def page(rows: list[dict], after: str | None, limit: int) -> dict:
    """OpenAI's cursor page of `rows` (already newest first)."""
    ids = [r["id"] for r in rows]
    start = ids.index(after) + 1 if after in ids else 0
    data = rows[start:start + limit]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": start + limit < len(rows)}


# -- OpenAI: batches ----------------------------------------------------------------------------

def check_line(raw: str, endpoint: str, seen: set[str]) -> tuple[dict | None, dict | None]:
    """(request, None) for a valid input line, else (None, {code, message, param, custom_id})."""
    try:
        line = json.loads(raw)
    except ValueError:
        return None, {"code": "invalid_json_line", "message": "This line is not parseable as valid JSON.",
                      "param": None, "custom_id": None}
    if not isinstance(line, dict):
        return None, {"code": "invalid_request", "message": "Each line must be a JSON object.", "param": None,
                      "custom_id": None}
    cid = line.get("custom_id") if isinstance(line.get("custom_id"), str) else None

    def bad(code: str, message: str, param: str | None) -> tuple[None, dict]:
        return None, {"code": code, "message": message, "param": param, "custom_id": cid}

    for field in LINE_FIELDS:
        if field not in line:
            return bad("missing_required_parameter", f"Missing required parameter: '{field}'.", field)
    extra = sorted(set(line) - set(LINE_FIELDS))
    if extra:
        return bad("unexpected_parameter", f"Unrecognized request argument supplied: {extra[0]}", extra[0])
    if not cid:
        return bad("invalid_custom_id", "custom_id must be a non-empty string.", "custom_id")
    if cid in seen:
        return bad("duplicate_custom_id", f"The custom_id '{cid}' is duplicated: custom_id must be unique "
                   "within a batch.", "custom_id")
    if line["method"] != "POST":
        return bad("invalid_method", "Only the POST method is supported.", "method")
    if line["url"] != endpoint:
        return bad("invalid_url", f"The URL provided for this request ('{line['url']}') does not match the batch "
                   f"endpoint '{endpoint}'.", "url")
    body = line["body"]
    if not isinstance(body, dict) or not isinstance(body.get("model"), str) or not body["model"]:
        return bad("missing_required_parameter", "Missing required parameter: 'body.model'.", "body.model")
    seen.add(cid)
    return line, None


def _last_user(messages: object) -> str:
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"] if isinstance(messages, list) else []
    return text_of(users[-1].get("content")) if users else ""


def _responses_input_text(inp: object) -> str:
    if isinstance(inp, str):
        return inp
    for item in reversed(inp if isinstance(inp, list) else []):
        if isinstance(item, dict) and item.get("type", "message") == "message" and item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            return " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict)
                            and p.get("type") in ("input_text", "text"))
    return ""


def answer(endpoint: str, body: dict) -> tuple[int, dict, tuple[int, int]]:
    """(status_code, response body, (input tokens, output tokens)) for one valid request."""
    model = body["model"]
    if model.startswith("status-") and model[7:].isdigit():
        code = int(model[7:])
        return code, {"error": {"message": f"fake upstream says {code}", "type": "invalid_request_error"
                                if code < 500 else "server_error", "param": None, "code": None}}, (0, 0)
    now = int(time.time())
    if endpoint == "/v1/embeddings":
        inp = body.get("input")
        texts = [inp] if isinstance(inp, str) else [str(t) for t in inp or []]
        tokens = sum(len(t.split()) for t in texts)
        return 200, {"object": "list", "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                     "data": [{"object": "embedding", "index": i, "embedding": embedding(t)}
                              for i, t in enumerate(texts)]}, (tokens, 0)
    if endpoint == "/v1/responses":
        text = "echo: " + _responses_input_text(body.get("input"))
        i_tok, o_tok = max(len(_responses_input_text(body.get("input")).split()), 1), len(text.split())
        return 200, {"id": new_id("resp_"), "object": "response", "created_at": now, "status": "completed",
                     "completed_at": now, "error": None, "incomplete_details": None, "model": model,
                     "output": [{"type": "message", "id": new_id("msg_"), "status": "completed", "role": "assistant",
                                 "content": [{"type": "output_text", "text": text, "annotations": []}]}],
                     "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
                     "usage": {"input_tokens": i_tok, "input_tokens_details": {"cached_tokens": 0},
                               "output_tokens": o_tok, "output_tokens_details": {"reasoning_tokens": 0},
                               "total_tokens": i_tok + o_tok}}, (i_tok, o_tok)
    user = _last_user(body.get("messages"))
    text = "echo: " + user
    p_tok, c_tok = max(len(user.split()), 1), len(text.split())
    return 200, {"id": new_id("chatcmpl-"), "object": "chat.completion", "created": now, "model": model,
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                              "finish_reason": "stop", "logprobs": None}],
                 "usage": {"prompt_tokens": p_tok, "completion_tokens": c_tok, "total_tokens": p_tok + c_tok}}, (p_tok, c_tok)


def create_batch(body: Any) -> dict:
    if not isinstance(body, dict):
        raise Refused("The body must be a JSON object.")
    extra = sorted(set(body) - BATCH_FIELDS)
    if extra:
        raise Refused(f"Unrecognized request argument supplied: {extra[0]}", param=extra[0])
    for field in ("input_file_id", "endpoint", "completion_window"):
        if field not in body:
            raise Refused(f"Missing required parameter: '{field}'.", param=field, code="missing_required_parameter")
    endpoint, window, fid = body["endpoint"], body["completion_window"], body["input_file_id"]
    if endpoint not in ENDPOINTS:
        raise Refused(f"Invalid value for 'endpoint': '{endpoint}'. This fake supports {', '.join(ENDPOINTS)}.",
                      param="endpoint", code="invalid_value")
    if window != "24h":
        raise Refused(f"Invalid value for 'completion_window': '{window}'. Supported values are: '24h'.",
                      param="completion_window", code="invalid_value")
    meta = body.get("metadata")
    if meta is not None and (not isinstance(meta, dict) or len(meta) > 16 or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512 for k, v in meta.items())):
        raise Refused("Invalid 'metadata': at most 16 pairs of strings (keys up to 64, values up to 512 characters).",
                      param="metadata")
    oea = body.get("output_expires_after")
    if oea is not None and (not isinstance(oea, dict) or oea.get("anchor") != "created_at"
                            or not isinstance(oea.get("seconds"), int) or not 3600 <= oea["seconds"] <= 2592000):
        raise Refused("Invalid 'output_expires_after': {anchor: 'created_at', seconds: 3600..2592000}.",
                      param="output_expires_after")
    if not isinstance(fid, str) or fid not in FILES:
        raise Refused(f"Invalid 'input_file_id': '{fid}'. No such file.", param="input_file_id")
    if FILES[fid]["meta"]["purpose"] != "batch":
        raise Refused(f"Invalid 'input_file_id': '{fid}'. The file must have purpose 'batch'.", param="input_file_id")
    raw = FILES[fid]["content"].decode(errors="replace").split("\n")
    if raw and raw[-1] == "":
        raw.pop()  # the final newline ends the last line; it is not an empty line
    seen: set[str] = set()
    lines = []
    for number, text in enumerate(raw, start=1):
        request, error = check_line(text, endpoint, seen)
        lines.append({"line": number, "request": request, "error": error})
    now = int(time.time())
    bid = new_id("batch_")
    valid = [x["request"] for x in lines if x["request"]]
    obj = {"id": bid, "object": "batch", "endpoint": endpoint, "model": valid[0]["body"]["model"] if valid else None,
           "errors": None, "input_file_id": fid, "completion_window": window, "status": "validating",
           "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
           "expires_at": now + 86400, "finalizing_at": None, "completed_at": None, "failed_at": None,
           "expired_at": None, "cancelling_at": None, "cancelled_at": None,
           "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": meta, "usage": None}
    BATCHES[bid] = {"obj": obj, "lines": lines, "out": None, "err": None, "tokens": (0, 0), "polls": 0,
                    "hold": any(r["body"]["model"] == "hold" for r in valid),
                    "expires_after": (oea or {}).get("seconds")}
    return obj


def process(batch: dict) -> None:
    """Run every valid request of `batch` once: its output and error lines, in input order."""
    obj = batch["obj"]
    out, err, i_tok, o_tok = [], [], 0, 0
    for entry in batch["lines"]:
        if entry["error"]:
            e = entry["error"]
            err.append({"id": new_id("batch_req_"), "custom_id": e["custom_id"], "response": None,
                        "error": {"code": e["code"], "message": f"Line {entry['line']}: {e['message']}"}})
            continue
        req = entry["request"]
        PROCESSED[req["custom_id"]] += 1
        status, body, (i, o) = answer(obj["endpoint"], req["body"])
        i_tok, o_tok = i_tok + i, o_tok + o
        row = {"id": new_id("batch_req_"), "custom_id": req["custom_id"],
               "response": {"status_code": status, "request_id": new_id("req_"), "body": body}, "error": None}
        (out if status == 200 else err).append(row)
    batch.update(out=out, err=err, tokens=(i_tok, o_tok))
    obj["request_counts"] = {"total": len(batch["lines"]), "completed": len(out), "failed": len(err)}


def write_results(batch: dict) -> None:
    """The output and error files, lines in reverse of input order (on purpose: no order is promised)."""
    obj, bid = batch["obj"], batch["obj"]["id"]
    expires = obj["created_at"] + batch["expires_after"] if batch["expires_after"] else None
    if batch["out"]:
        obj["output_file_id"] = store_file(jsonl(batch["out"][::-1]), f"{bid}_output.jsonl", "batch_output", expires)["id"]
    if batch["err"]:
        obj["error_file_id"] = store_file(jsonl(batch["err"][::-1]), f"{bid}_error.jsonl", "batch_output", expires)["id"]
    if batch["out"] is not None:
        i, o = batch["tokens"]
        obj["usage"] = {"input_tokens": i, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": o,
                        "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": i + o}


def advance(batch: dict) -> None:
    """One step of the batch's life (see the module docstring)."""
    obj, now = batch["obj"], int(time.time())
    batch["polls"] += 1
    status = obj["status"]
    if status == "validating":
        bad = [x for x in batch["lines"] if x["error"]]
        if len(bad) == len(batch["lines"]):
            obj.update(status="failed", failed_at=now, errors={"object": "list", "data": [
                {"code": x["error"]["code"], "line": x["line"], "message": x["error"]["message"],
                 "param": x["error"]["param"]} for x in bad] or [
                {"code": "empty_file", "line": None, "message": "The batch input file is empty.", "param": None}]})
        else:
            obj.update(status="in_progress", in_progress_at=now)
            obj["request_counts"] = {"total": len(batch["lines"]), "completed": 0, "failed": 0}
    elif status == "in_progress" and not batch["hold"]:
        process(batch)
        obj.update(status="finalizing", finalizing_at=now)
    elif status == "finalizing":
        write_results(batch)
        obj.update(status="completed", completed_at=now)
    elif status == "cancelling":
        write_results(batch)
        obj.update(status="cancelled", cancelled_at=now)


def get_batch(bid: str) -> dict:
    if bid not in BATCHES:
        raise Refused(f"No batch found with id '{bid}'.", 404, param="batch_id")
    return BATCHES[bid]


class Batches(Base):
    def post(self) -> None:
        self.finish(create_batch(self.json_body()))

    def get(self) -> None:
        limit = int(self.get_query_argument("limit", "20"))
        if not 1 <= limit <= 100:
            raise Refused("Invalid 'limit': an integer from 1 to 100.", param="limit")
        rows = [b["obj"] for b in reversed(BATCHES.values())]
        self.finish(page(rows, self.get_query_argument("after", None), limit))


class BatchOne(Base):
    def get(self, bid: str) -> None:
        batch = get_batch(bid)
        advance(batch)
        self.finish(batch["obj"])


class BatchCancel(Base):
    def post(self, bid: str) -> None:
        obj = get_batch(bid)["obj"]
        if obj["status"] in ENDED:
            raise Refused(f"Cannot cancel a batch with status '{obj['status']}'.", 409)
        if obj["status"] != "cancelling":
            obj.update(status="cancelling", cancelling_at=int(time.time()))
        self.finish(obj)


# -- Anthropic: message batches -----------------------------------------------------------------

def check_batch_request(i: int, item: Any, seen: set[str]) -> None:
    where = f"requests.{i}"
    if not isinstance(item, dict):
        raise Invalid(f"{where}: Input should be an object")
    for field in ("custom_id", "params"):
        if field not in item:
            raise Invalid(f"{where}.{field}: Field required")
    extra = sorted(set(item) - {"custom_id", "params"})
    if extra:
        raise Invalid(f"{where}.{extra[0]}: Extra inputs are not permitted")
    cid = item["custom_id"]
    if not isinstance(cid, str) or not CUSTOM_ID.match(cid):
        raise Invalid(f"{where}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
    if cid in seen:
        raise Invalid(f"{where}.custom_id: Duplicate custom_id '{cid}': custom_id must be unique within a batch")
    seen.add(cid)
    params = item["params"]
    if not isinstance(params, dict):
        raise Invalid(f"{where}.params: Input should be an object")
    if not isinstance(params.get("model"), str) or not params["model"]:
        raise Invalid(f"{where}.params.model: Field required")
    mt = params.get("max_tokens")
    if not isinstance(mt, int) or isinstance(mt, bool) or mt < 1:
        raise Invalid(f"{where}.params.max_tokens: Field required (an integer >= 1)")
    if not isinstance(params.get("messages"), list) or not params["messages"]:
        raise Invalid(f"{where}.params.messages: at least one message is required")


def message_result(params: dict) -> dict:
    """The `result` of one request of a Message Batch."""
    try:
        check_body(params)
        if params.get("stream"):
            raise Invalid("stream: streaming is not supported in a Message Batch")
    except Invalid as exc:
        return {"type": "errored", "error": {"type": "error", "error": {"type": "invalid_request_error",
                                                                       "message": str(exc)}}}
    model = params["model"]
    if model.startswith("status-") and model[7:].isdigit():
        code = int(model[7:])
        return {"type": "errored", "error": {"type": "error", "error": {
            "type": STATUS_TYPE.get(code, "api_error"), "message": f"fake upstream says {code}"}}}
    blocks, stop, matched = reply(params)
    out_words = sum(len((b.get("text") or json.dumps(b.get("input", ""))).split()) for b in blocks)
    return {"type": "succeeded", "message": {
        "id": new_id("msg_fake"), "type": "message", "role": "assistant", "model": model, "content": blocks,
        "stop_reason": stop, "stop_sequence": matched,
        "usage": {"input_tokens": input_tokens(params), "output_tokens": out_words,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}}


def end_message_batch(batch: dict, canceled: bool, base_url: str) -> None:
    obj = batch["obj"]
    rows = []
    for item in batch["requests"]:
        if canceled:
            result: dict = {"type": "canceled"}
        else:
            PROCESSED[item["custom_id"]] += 1
            result = message_result(item["params"])
        rows.append({"custom_id": item["custom_id"], "result": result})
    batch["results"] = jsonl(rows[::-1])  # reverse order on purpose: results are matched by custom_id
    kinds = Counter(r["result"]["type"] for r in rows)
    obj.update(processing_status="ended", ended_at=rfc3339(time.time()),
               results_url=f"{base_url}/v1/messages/batches/{obj['id']}/results",
               request_counts={"processing": 0, "succeeded": kinds["succeeded"], "errored": kinds["errored"],
                               "canceled": kinds["canceled"], "expired": 0})


def get_message_batch(bid: str) -> dict:
    if bid not in MSG_BATCHES:
        raise Refused(f"Not found: no Message Batch with id '{bid}'", 404)
    return MSG_BATCHES[bid]


class MessageBatches(Base):
    provider = "anthropic"

    def post(self) -> None:
        body = self.json_body()
        try:
            if not isinstance(body, dict):
                raise Invalid("the body must be a JSON object")
            extra = sorted(set(body) - {"requests"})
            if extra:
                raise Invalid(f"{extra[0]}: Extra inputs are not permitted")
            requests = body.get("requests")
            if not isinstance(requests, list) or not requests:
                raise Invalid("requests: List should have at least 1 item")
            seen: set[str] = set()
            for i, item in enumerate(requests):
                check_batch_request(i, item, seen)
        except Invalid as exc:
            raise Refused(str(exc)) from None
        now = time.time()
        bid = new_id("msgbatch_")
        obj = {"id": bid, "type": "message_batch", "processing_status": "in_progress",
               "request_counts": {"processing": len(requests), "succeeded": 0, "errored": 0, "canceled": 0,
                                  "expired": 0},
               "ended_at": None, "created_at": rfc3339(now), "expires_at": rfc3339(now + 86400),
               "cancel_initiated_at": None, "archived_at": None, "results_url": None}
        MSG_BATCHES[bid] = {"obj": obj, "requests": requests, "polls": 0, "results": None,
                            "hold": any(r["params"]["model"] == "hold" for r in requests)}
        self.finish(obj)

    def get(self) -> None:
        limit = int(self.get_query_argument("limit", "20"))
        if not 1 <= limit <= 1000:
            raise Refused("limit: Input should be between 1 and 1000")
        rows = [b["obj"] for b in reversed(MSG_BATCHES.values())]
        ids = [r["id"] for r in rows]
        after, before = self.get_query_argument("after_id", None), self.get_query_argument("before_id", None)
        if before in ids:
            end = ids.index(before)
            data, more = rows[max(0, end - limit):end], end - limit > 0
        else:
            start = ids.index(after) + 1 if after in ids else 0
            data, more = rows[start:start + limit], start + limit < len(rows)
        self.finish({"data": data, "has_more": more, "first_id": data[0]["id"] if data else None,
                     "last_id": data[-1]["id"] if data else None})


class MessageBatchOne(Base):
    provider = "anthropic"

    def get(self, bid: str) -> None:
        batch = get_message_batch(bid)
        obj = batch["obj"]
        batch["polls"] += 1
        base = f"{self.request.protocol}://{self.request.host}"
        if obj["processing_status"] == "canceling":
            end_message_batch(batch, True, base)
        elif obj["processing_status"] == "in_progress" and batch["polls"] >= 2 and not batch["hold"]:
            end_message_batch(batch, False, base)
        self.finish(obj)

    def delete(self, bid: str) -> None:
        obj = get_message_batch(bid)["obj"]
        if obj["processing_status"] != "ended":
            raise Refused(f"Message Batch {bid} is still {obj['processing_status']}: it can be deleted once it "
                          "has ended (cancel it first)")
        del MSG_BATCHES[bid]
        self.finish({"id": bid, "type": "message_batch_deleted"})


class MessageBatchCancel(Base):
    provider = "anthropic"

    def post(self, bid: str) -> None:
        obj = get_message_batch(bid)["obj"]
        if obj["processing_status"] == "ended":
            raise Refused(f"Message Batch {bid} has already ended and cannot be canceled")
        if obj["processing_status"] == "in_progress":
            obj.update(processing_status="canceling", cancel_initiated_at=rfc3339(time.time()))
        self.finish(obj)


class MessageBatchResults(Base):
    provider = "anthropic"

    def get(self, bid: str) -> None:
        batch = get_message_batch(bid)
        if batch["results"] is None:
            raise Refused(f"Message Batch {bid} has not yet ended: results are available once processing ends")
        self.set_header("Content-Type", "application/x-jsonl")  # read line by line (the SDK's JSONLDecoder)
        self.finish(batch["results"])


# -- both -----------------------------------------------------------------------------------------

class State(tornado.web.RequestHandler):
    def get(self) -> None:
        batches = {bid: {"provider": "openai", "status": b["obj"]["status"], "request_counts": b["obj"]["request_counts"],
                         "polls": b["polls"]} for bid, b in BATCHES.items()}
        batches.update({bid: {"provider": "anthropic", "status": b["obj"]["processing_status"],
                              "request_counts": b["obj"]["request_counts"], "polls": b["polls"]}
                        for bid, b in MSG_BATCHES.items()})
        files = {fid: {"filename": f["meta"]["filename"], "purpose": f["meta"]["purpose"], "bytes": f["meta"]["bytes"],
                       "lines": f["content"].count(b"\n")} for fid, f in FILES.items()}
        self.finish({"files": files, "batches": batches, "processed": dict(PROCESSED), "last": dict(LAST)})

    def delete(self) -> None:
        reset()
        self.finish({})


class NotFound(Base):
    def prepare(self) -> None:
        self.provider = "anthropic" if self.request.path.startswith("/v1/messages") else "openai"
        super().prepare()

    def get(self, _: str) -> None:
        raise Refused(f"Not found: {self.request.method} {self.request.path}", 404)

    post = delete = get


def make_app(api_key: str | None) -> tornado.web.Application:
    ident = r"([A-Za-z0-9_-]+)"
    return tornado.web.Application([
        (r"/v1/files", Files), (rf"/v1/files/{ident}", FileOne), (rf"/v1/files/{ident}/content", FileContent),
        (r"/v1/batches", Batches), (rf"/v1/batches/{ident}", BatchOne), (rf"/v1/batches/{ident}/cancel", BatchCancel),
        (r"/v1/messages/batches", MessageBatches), (rf"/v1/messages/batches/{ident}", MessageBatchOne),
        (rf"/v1/messages/batches/{ident}/cancel", MessageBatchCancel),
        (rf"/v1/messages/batches/{ident}/results", MessageBatchResults),
        (r"/_state", State), (r"/(.*)", NotFound)], api_key=api_key)


if __name__ == "__main__":
    from serve import serve  # (run as a script: this folder is on sys.path)

    serve(lambda args: make_app(args.key))
