"""OpenAI Files: upload (multipart, written to disk as it arrives), list, retrieve, content, delete.

An upload is authenticated and authorised before its first byte is stored, and refused with a
413 past `BodhiExtension.max_file_mb`, from its Content-Length when it gives one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from jupyter_server.auth.decorator import authorized
from tornado import web

from ..objs.errors import PayloadTooLarge
from ..server_core.contract import FileDeleted, FileList, FileObject
from ._base import BodhiHandler, Op
from ._upload import Upload

__all__ = ["FileContentHandler", "FileHandler", "FilesHandler"]

_TAGS = ("batch",)
_CHUNK = 256 * 1024


@web.stream_request_body
class FilesHandler(BodhiHandler):
    path = "files"
    openapi = {
        "get": Op("Files (purpose filters)", response=FileList, errors=(403,), tags=_TAGS,
                  query=(("purpose", "string", "only files of this purpose"),)),
        "post": Op("Upload a file: multipart/form-data with purpose (batch) and file (a .jsonl)",
                   response=FileObject, errors=(400, 403, 413), tags=_TAGS, body="multipart"),
    }
    _upload: Upload | None = None
    _refused: PayloadTooLarge | None = None  # an upload refused from its Content-Length: its bytes are dropped

    async def prepare(self) -> None:  # type: ignore[override]
        await super().prepare()
        if self.request.method != "POST":
            return
        if not self.current_user:  # nothing is stored for a request that will be refused
            raise web.HTTPError(403)
        if not self.authorizer.is_authorized(self, self.current_user, "write", self.auth_resource):
            raise web.HTTPError(403)
        limit = self.ops.batches.max_file_bytes
        length = int(self.request.headers.get("Content-Length") or 0)
        conn: Any = self.request.connection  # tornado's HTTP1Connection while the body streams in
        conn.set_max_body_size(max(length, limit + 64 * 1024))
        if length > limit + 64 * 1024:  # (the multipart framing adds a little): read and drop it, then a 413
            self._refused = PayloadTooLarge(f"The file is larger than this server's limit of {limit:,} bytes.",
                                            param="file")
            return
        directory = await asyncio.to_thread(self.ops.batches.upload_dir)
        self._upload = Upload(self.request.headers.get("Content-Type", ""), directory, limit)

    async def data_received(self, chunk: bytes) -> None:
        if self._upload is not None:
            await asyncio.to_thread(self._upload.feed, chunk)

    def on_finish(self) -> None:
        if self._upload is not None and self._upload.path.exists() and self.get_status() >= 400:
            self._upload.discard()

    @web.authenticated
    @authorized
    async def get(self) -> None:
        recs = await self.ops.batches.files(self.get_query_argument("purpose", None))
        data = [FileObject(**r.public()) for r in recs]
        self.send_json(FileList(data=data, first_id=data[0].id if data else None,
                                last_id=data[-1].id if data else None))

    @web.authenticated
    @authorized
    async def post(self) -> None:
        if self._refused is not None:
            raise self._refused
        assert self._upload is not None
        tmp, filename, purpose = await asyncio.to_thread(self._upload.finish)
        rec = await self.ops.batches.add_file(tmp, filename, purpose)
        self.send_json(FileObject(**rec.public()))


class FileHandler(BodhiHandler):
    path = r"files/(?P<id>[^/]+)"
    openapi = {"get": Op("A file", response=FileObject, errors=(403, 404), tags=_TAGS),
               "delete": Op("Delete a file", response=FileDeleted, errors=(403, 404), tags=_TAGS)}

    @web.authenticated
    @authorized
    async def get(self, id: str) -> None:
        self.send_json(FileObject(**(await self.ops.batches.file(id)).public()))

    @web.authenticated
    @authorized
    async def delete(self, id: str) -> None:
        await self.ops.batches.delete_file(id)
        self.send_json(FileDeleted(id=id))


class FileContentHandler(BodhiHandler):
    path = r"files/(?P<id>[^/]+)/content"
    openapi = {"get": Op("A file's bytes (a batch's output or error file: JSONL ordered by custom_id)",
                         errors=(403, 404), tags=_TAGS)}

    @web.authenticated
    @authorized
    async def get(self, id: str) -> None:
        path = await self.ops.batches.file_path(id)
        self.set_header("Content-Type", "application/jsonl")
        fh: Any = await asyncio.to_thread(path.open, "rb")
        try:
            while chunk := await asyncio.to_thread(fh.read, _CHUNK):
                self.write(chunk)
                await self.flush()
        finally:
            await asyncio.to_thread(fh.close)
        self.finish()
