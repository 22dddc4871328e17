"""Private: a multipart/form-data upload (`purpose` and `file`) written to disk as it arrives.

The body is parsed by python-multipart's streaming parser, chunk by chunk: the `file` part goes
straight into a temp file beside where the operations keep files, the other fields are small
text kept in memory. Past the size limit nothing more is written and the upload is refused.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header

from ..objs.errors import InvalidRequestError, PayloadTooLarge

__all__ = ["Upload"]

_MAX_FIELD = 4096  # bytes of a text field (purpose)


class Upload:
    """Feed body chunks (in a worker thread); `finish` checks the parts and hands over the file."""

    def __init__(self, content_type: str, directory: Path, limit: int) -> None:
        kind, opts = parse_options_header(content_type)
        boundary = opts.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise InvalidRequestError("Upload a file as multipart/form-data with the fields purpose and file.",
                                      param="file")
        self.limit = limit
        self.size = 0
        self.too_large = False
        self.malformed: str | None = None  # why the body is not multipart/form-data (a 400 at finish)
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        fd, name = tempfile.mkstemp(prefix=".upload-", suffix=".partial", dir=directory)
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._header = b""
        self._headers: dict[bytes, bytes] = {}
        self._part: str | None = None
        self._value = bytearray()
        self._parser = MultipartParser(boundary, {
            "on_part_begin": self._begin, "on_header_field": self._field, "on_header_value": self._hvalue,
            "on_header_end": self._hend, "on_headers_finished": self._headers_done, "on_part_data": self._data,
            "on_part_end": self._end})

    # python-multipart callbacks
    def _begin(self) -> None:
        self._headers, self._part, self._value = {}, None, bytearray()

    def _field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _hvalue(self, data: bytes, start: int, end: int) -> None:
        self._headers[self._header.lower()] = self._headers.get(self._header.lower(), b"") + data[start:end]

    def _hend(self) -> None:
        self._header = b""

    def _headers_done(self) -> None:
        _, opts = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._part = opts.get(b"name", b"").decode(errors="replace")
        if self._part == "file":
            self.filename = os.path.basename(opts.get(b"filename", b"upload.jsonl").decode(errors="replace"))

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._part == "file":
            self.size += end - start
            if self.size > self.limit:
                self.too_large = True
            if not self.too_large:
                self._file.write(data[start:end])
        elif len(self._value) < _MAX_FIELD:
            self._value += data[start:end]

    def _end(self) -> None:
        if self._part and self._part != "file":
            self.fields[self._part] = self._value.decode(errors="replace")

    def feed(self, chunk: bytes) -> None:
        if self.malformed is not None:
            return  # the rest of a broken body is read and dropped, then answered with a 400
        try:
            self._parser.write(chunk)
        except Exception as exc:  # noqa: BLE001 - python-multipart's errors for a broken body
            self.malformed = str(exc) or type(exc).__name__

    def finish(self) -> tuple[Path, str, str]:
        """The temp file, its name and the purpose; raises (and removes the file) when the upload
        was too large or a part is missing."""
        if self.malformed is None:
            try:
                self._parser.finalize()
            except Exception as exc:  # noqa: BLE001
                self.malformed = str(exc) or type(exc).__name__
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        try:
            if self.malformed is not None:
                raise InvalidRequestError(f"The upload is not valid multipart/form-data ({self.malformed[:200]}).",
                                          param="file")
            if self.too_large:
                raise PayloadTooLarge(f"The file is larger than this server's limit of {self.limit:,} bytes.",
                                      param="file")
            if self.filename is None:
                raise InvalidRequestError("The upload has no `file` part.", param="file")
            if "purpose" not in self.fields:
                raise InvalidRequestError("The upload has no `purpose` field (use purpose=batch).", param="purpose")
        except Exception:
            self.discard()
            raise
        return self.path, self.filename, self.fields["purpose"]

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)
