"""A small Hugging Face Hub on 127.0.0.1 for tests (the hub edge), selected with HF_ENDPOINT.

Run: python fake_hub.py [--gguf PATH]  -> prints "PORT <n>" once listening.
It serves what huggingface_hub calls for `model_info` and `hf_hub_download`:
  GET  /api/models/{repo}[/revision/{rev}]   id, sha, siblings (404 + X-Error-Code for unknown repos)
  HEAD /{repo}/resolve/{rev}/{file}          X-Repo-Commit, ETag (the sha256), Content-Length
  GET  /{repo}/resolve/{rev}/{file}          the bytes; honours `Range: bytes=N-` with 206
Repos:
  test/tiny-GGUF    tiny.Q4_1.gguf (the bytes of PATH, or a few bytes without it), tiny.Q8_0.gguf (the same), README.md
  test/twins-GGUF   a/model.Q4_K_M.gguf and b/model.Q4_K_M.gguf (an ambiguous quant)
Test controls:
  POST /_control {"cut_after": N}    the next GET drops the connection after N bytes
                 {"hold_after": N}   the next GET stops after N bytes until {"release": true}
  GET  /_log                         every request: method, path, Range header, all headers, and
                                     `sent`: the body bytes written so far (a GET's count grows live)
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
from pathlib import Path

import tornado.iostream
import tornado.web

SHA = "0123456789abcdef0123456789abcdef01234567"
CHUNK = 256 * 1024
LOG: list[dict] = []
CONTROL: dict = {}
RELEASE = asyncio.Event()


def build_repos(gguf: Path | None) -> dict[str, dict[str, Path | bytes]]:
    data: Path | bytes = gguf if gguf is not None else b"GGUF-tiny"
    return {
        "test/tiny-GGUF": {"tiny.Q4_1.gguf": data, "tiny.Q8_0.gguf": data, "README.md": b"# tiny\n"},
        "test/twins-GGUF": {"a/model.Q4_K_M.gguf": b"GGUF-a", "b/model.Q4_K_M.gguf": b"GGUF-b"},
    }


class Base(tornado.web.RequestHandler):
    def prepare(self) -> None:
        self.entry = {"method": self.request.method, "path": self.request.path,
                      "range": self.request.headers.get("Range"), "headers": dict(self.request.headers), "sent": 0}
        LOG.append(self.entry)

    def not_found(self, code: str, message: str) -> None:
        self.set_status(404)
        self.set_header("X-Error-Code", code)
        self.set_header("X-Error-Message", message)
        self.finish({"error": message})


class ModelInfo(Base):
    def get(self, repo: str, rev: str | None = None) -> None:
        files = self.settings["repos"].get(repo)
        if files is None:
            return self.not_found("RepoNotFound", "Repository not found")
        self.finish({"id": repo, "modelId": repo, "sha": SHA, "private": False,
                     "siblings": [{"rfilename": f} for f in sorted(files)]})


class Resolve(Base):
    def _file(self, repo: str, path: str) -> bytes | Path | None:
        files = self.settings["repos"].get(repo)
        if files is None:
            self.not_found("RepoNotFound", "Repository not found")
            return None
        if path not in files:
            self.not_found("EntryNotFound", "Entry not found")
            return None
        return files[path]

    def _file_headers(self, data: bytes | Path) -> int:
        size = data.stat().st_size if isinstance(data, Path) else len(data)
        digest = self.settings["digests"].get(data) if isinstance(data, Path) else hashlib.sha256(data).hexdigest()
        self.set_header("X-Repo-Commit", SHA)
        self.set_header("ETag", f'"{digest}"')
        self.set_header("Accept-Ranges", "bytes")
        return size

    def head(self, repo: str, rev: str, path: str) -> None:
        data = self._file(repo, path)
        if data is None:
            return
        size = self._file_headers(data)
        self.set_header("Content-Length", str(size))
        self.finish()

    async def get(self, repo: str, rev: str, path: str) -> None:
        data = self._file(repo, path)
        if data is None:
            return
        size = self._file_headers(data)
        start = 0
        rng = self.request.headers.get("Range")
        if rng and rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[len("bytes="):-1])
            self.set_status(206)
            self.set_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.set_header("Content-Length", str(size - start))
        self.set_header("Content-Type", "application/octet-stream")
        cut, hold = CONTROL.pop("cut_after", None), CONTROL.pop("hold_after", None)
        sent = 0
        try:
            if isinstance(data, bytes):
                self.write(data[start:])
                await self.flush()
                self.finish()
                return
            with open(data, "rb") as f:  # noqa: ASYNC230 - a local file in a test server
                f.seek(start)
                while chunk := f.read(CHUNK):
                    for limit in (cut, hold):
                        if limit is not None and sent < limit <= sent + len(chunk):
                            chunk = chunk[: limit - sent]
                    self.write(chunk)
                    await self.flush()
                    sent += len(chunk)
                    self.entry["sent"] = sent
                    if cut is not None and sent >= cut:
                        self.request.connection.stream.close()
                        return
                    if hold is not None and sent == hold:
                        await RELEASE.wait()
                        RELEASE.clear()
                        hold = None
                        f.seek(start + sent)
            self.finish()
        except tornado.iostream.StreamClosedError:
            pass


class Control(tornado.web.RequestHandler):
    def post(self) -> None:
        body = json.loads(self.request.body or b"{}")
        if body.pop("release", False):
            RELEASE.set()
        CONTROL.update(body)
        self.finish({"ok": True})


class Log(tornado.web.RequestHandler):
    def get(self) -> None:
        self.finish({"requests": LOG})


def make_app(gguf: Path | None) -> tornado.web.Application:
    repos = build_repos(gguf)
    digests = {gguf: hashlib.sha256(gguf.read_bytes()).hexdigest()} if gguf is not None else {}
    repo = r"([^/]+/[^/]+)"
    return tornado.web.Application([
        (rf"/api/models/{repo}/revision/([^/]+)", ModelInfo),
        (rf"/api/models/{repo}", ModelInfo),
        (rf"/{repo}/resolve/([^/]+)/(.+)", Resolve),
        (r"/_control", Control),
        (r"/_log", Log),
    ], repos=repos, digests=digests)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", type=Path)
    args = ap.parse_args()
    server = make_app(args.gguf).listen(0, address="127.0.0.1")
    port = next(iter(server._sockets.values())).getsockname()[1]
    print(f"PORT {port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
