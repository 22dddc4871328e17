"""A small real Gemini API server on 127.0.0.1 for tests (the api_format "gemini" edge).

Run: python fake_gemini.py [--key KEY]  -> prints "PORT <n>" once listening.
It checks the REST wire format (https://ai.google.dev/api/generate-content, /api/models) and
answers anything else with a 400 in Google's error envelope, so a translation bug fails a test:
  POST /v1beta/models/{model}:generateContent, or :streamGenerateContent?alt=sse (no alt: 400)
  GET  /v1beta/models[?pageSize=n][&pageToken=t]
  the key in the `x-goog-api-key` header: a `key` query parameter is a 400 (the gateway must
  never put a key in a URL); with --key, a wrong key is a 400 API_KEY_INVALID, a missing one a
  403, and an `Authorization` header a 401 (Google takes it for an OAuth token)
  a camelCase JSON body: `contents` required and non-empty, roles user/model only, known
  top-level fields, generationConfig fields, part types and tool fields only, and a
  `functionResponse.response` that is an object
Behaviour by model name:
  echo*        reply "echo: <last user text>"; streamed one chunk per word, usageMetadata
               (prompt only) on every chunk and complete on the last; maxOutputTokens below the
               word count cuts the reply there with finishReason MAX_TOKENS
  tool         one functionCall of the first declared function (or the one allowedFunctionNames
               names), args {"city": "Paris"} when it has a `city` parameter, else a minimal
               instance of its schema; once the last content holds a functionResponse, replies
               "tool said: <response as JSON>"
  tool-sig     as tool, but the call carries a thoughtSignature and, like Gemini 3, a history
               whose functionCall parts lost theirs is a 400
  structured   replies JSON matching generationConfig.responseJsonSchema (a minimal instance)
  blocked      no candidates: promptFeedback.blockReason SAFETY
  status-NNN   HTTP NNN in Google's error envelope (429 adds retry-after: 7)
  echo-key     a 400 API_KEY_INVALID quoting the key received; streamed, a first chunk and then
               that error as an SSE event, split across two writes in the middle of the key
GET /v1beta/models lists echo, echo-2, tool, tool-sig, structured, blocked (generateContent) and
text-embedding-004 (embedContent only).
GET /_last returns the last request's method, path, query, headers, body and raw text.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid

import tornado.web

LAST: dict = {}
STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
          429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
TOP = {"contents", "systemInstruction", "generationConfig", "tools", "toolConfig", "safetySettings", "cachedContent"}
CONFIG = {"stopSequences": list, "responseMimeType": str, "responseSchema": dict, "responseJsonSchema": dict,
          "responseModalities": list, "candidateCount": int, "maxOutputTokens": int, "temperature": (int, float),
          "topP": (int, float), "topK": int, "seed": int, "presencePenalty": (int, float),
          "frequencyPenalty": (int, float), "responseLogprobs": bool, "logprobs": int, "thinkingConfig": dict,
          "mediaResolution": str, "speechConfig": dict}
PART_DATA = ("text", "inlineData", "fileData", "functionCall", "functionResponse")
PART_FIELDS = {"inlineData": {"mimeType", "data"}, "fileData": {"mimeType", "fileUri"},
               "functionCall": {"name", "args", "id"}, "functionResponse": {"name", "response", "id"}}
TOOL_KEYS = {"functionDeclarations", "googleSearch", "codeExecution", "urlContext"}
DECL_KEYS = {"name", "description", "parameters", "parametersJsonSchema", "response", "responseJsonSchema"}
FUNCTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}")
MODELS = ["echo", "echo-2", "tool", "tool-sig", "structured", "blocked"]


def envelope(code: int, message: str, details: list | None = None) -> dict:
    err = {"code": code, "message": message, "status": STATUS.get(code, "UNKNOWN")}
    return {"error": {**err, **({"details": details} if details else {})}}


def key_invalid(message: str) -> dict:
    return envelope(400, message, [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                                    "domain": "googleapis.com"}])


def unknown(where: str, names: set) -> str | None:
    return f'Invalid JSON payload received. Unknown name "{sorted(names)[0]}" at \'{where}\': Cannot find field.' \
        if names else None


def check_part(part: object, where: str, role: str) -> str | None:
    if not isinstance(part, dict):
        return f"{where} must be an object"
    data = [k for k in PART_DATA if k in part]
    bad = unknown(where, set(part) - set(PART_DATA) - {"thought", "thoughtSignature"})
    if bad or len(data) != 1:
        return bad or f"{where} must have exactly one of {', '.join(PART_DATA)}"
    kind, value = data[0], part[data[0]]
    if kind == "text":
        return None if isinstance(value, str) else f"{where}.text must be a string"
    if not isinstance(value, dict):
        return f"{where}.{kind} must be an object"
    bad = unknown(f"{where}.{kind}", set(value) - PART_FIELDS[kind])
    if bad:
        return bad
    if kind == "inlineData":
        try:
            base64.b64decode(str(value.get("data", "")), validate=True)
        except (binascii.Error, ValueError):
            return f"{where}.inlineData.data must be base64"
        return None if isinstance(value.get("mimeType"), str) else f"{where}.inlineData.mimeType is required"
    if kind == "fileData":
        return None if isinstance(value.get("fileUri"), str) else f"{where}.fileData.fileUri is required"
    if not isinstance(value.get("name"), str):
        return f"{where}.{kind}.name is required"
    if kind == "functionCall":
        if role != "model":
            return f"{where}: functionCall parts belong to role model"
        return None if isinstance(value.get("args", {}), dict) else f"{where}.functionCall.args must be an object"
    if role != "user":
        return f"{where}: functionResponse parts belong to role user"
    return None if isinstance(value.get("response"), dict) else f"{where}.functionResponse.response must be an object"


def check_tools(body: dict) -> str | None:
    tools = body.get("tools", [])
    if not isinstance(tools, list):
        return "tools must be a list"
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or unknown(f"tools[{i}]", set(tool) - TOOL_KEYS):
            return unknown(f"tools[{i}]", set(tool) - TOOL_KEYS) if isinstance(tool, dict) else "tools[] objects"
        for j, decl in enumerate(tool.get("functionDeclarations", [])):
            where = f"tools[{i}].functionDeclarations[{j}]"
            if not isinstance(decl, dict) or unknown(where, set(decl) - DECL_KEYS):
                return unknown(where, set(decl) - DECL_KEYS) if isinstance(decl, dict) else f"{where} must be an object"
            if not FUNCTION_NAME.fullmatch(str(decl.get("name", ""))):
                return f"{where}.name is not a valid function name"
            if "parameters" in decl and "parametersJsonSchema" in decl:
                return f"{where}: parameters and parametersJsonSchema are mutually exclusive"
    config = body.get("toolConfig", {})
    fcc = config.get("functionCallingConfig", {}) if isinstance(config, dict) else None
    if not isinstance(fcc, dict) or unknown("toolConfig", set(config) - {"functionCallingConfig", "retrievalConfig"}):
        return "toolConfig must be {functionCallingConfig: {...}}"
    if unknown("toolConfig.functionCallingConfig", set(fcc) - {"mode", "allowedFunctionNames"}):
        return unknown("toolConfig.functionCallingConfig", set(fcc) - {"mode", "allowedFunctionNames"})
    if fcc.get("mode", "AUTO") not in ("AUTO", "ANY", "NONE", "VALIDATED"):
        return "toolConfig.functionCallingConfig.mode must be AUTO, ANY, NONE or VALIDATED"
    if fcc.get("allowedFunctionNames") and fcc.get("mode") not in ("ANY", "VALIDATED"):
        return "allowedFunctionNames should only be set when the mode is ANY or VALIDATED"
    return None


def check_body(body: object) -> str | None:
    """The first way `body` is not a GenerateContentRequest, or None."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    if unknown("request", set(body) - TOP):
        return unknown("request", set(body) - TOP)
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return "* GenerateContentRequest.contents: contents is not specified"
    for i, content in enumerate(contents):
        if not isinstance(content, dict) or unknown(f"contents[{i}]", set(content) - {"role", "parts"}):
            return f"contents[{i}] must be {{role, parts}}"
        if content.get("role") not in ("user", "model"):
            return f"Please use a valid role: user, model (contents[{i}].role is {content.get('role')!r})"
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            return f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
        for j, part in enumerate(parts):
            bad = check_part(part, f"contents[{i}].parts[{j}]", content["role"])
            if bad:
                return bad
    system = body.get("systemInstruction")
    if system is not None:
        if not isinstance(system, dict) or unknown("systemInstruction", set(system) - {"role", "parts"}):
            return "systemInstruction must be {parts: [...]}"
        if not system.get("parts") or any(not isinstance(p, dict) or set(p) != {"text"} for p in system["parts"]):
            return "systemInstruction.parts must be text parts"
    config = body.get("generationConfig", {})
    if not isinstance(config, dict) or unknown("generation_config", set(config) - set(CONFIG)):
        return unknown("generation_config", set(config) - set(CONFIG)) or "generationConfig must be an object"
    for name, kind in CONFIG.items():
        if name in config and (not isinstance(config[name], kind) or isinstance(config[name], bool) != (kind is bool)):
            return f"generationConfig.{name} has the wrong type"
    if "responseSchema" in config and "responseJsonSchema" in config:
        return "responseSchema and responseJsonSchema are mutually exclusive"
    if ("responseJsonSchema" in config or "responseSchema" in config) and \
            config.get("responseMimeType") != "application/json":
        return "a response schema needs responseMimeType application/json"
    if any(not isinstance(s, str) for s in config.get("stopSequences", [])):
        return "generationConfig.stopSequences must be strings"
    return check_tools(body)


def example(schema: object) -> object:
    """A minimal JSON value valid against a (JSON or Gemini) schema."""
    if not isinstance(schema, dict):
        return {}
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return example(schema[key][0])
    kind = schema.get("type")
    kind = str(next((k for k in kind if k != "null"), "null") if isinstance(kind, list) else kind or "").lower()
    if kind == "object":
        return {k: example(v) for k, v in schema.get("properties", {}).items()}
    return {"string": "text", "integer": 1, "number": 1.5, "boolean": True, "array": [], "null": None}.get(kind, "x")


def words_of(body: dict) -> int:
    texts = [p.get("text", "") for c in body["contents"] for p in c["parts"]]
    return max(1, sum(len(str(t).split()) for t in texts))


class Base(tornado.web.RequestHandler):
    METHOD = ""

    def prepare(self) -> None:
        if self.request.method != self.METHOD:  # a wrong method is a 400 here, not a 405
            self.record()
            self.fail(400, envelope(400, f"{self.request.method} is not served at {self.request.path}"))

    def fail(self, code: int, body: dict) -> None:
        self.set_status(code)
        if code == 429:
            self.set_header("retry-after", "7")
        self.finish(body)

    def received_key(self) -> str:
        return self.request.headers.get("x-goog-api-key", "")

    def refused(self) -> bool:
        """Answered an error for a key in the URL or in the wrong header, or a wrong key."""
        key = self.settings.get("api_key")
        if "key" in self.request.query_arguments:
            self.fail(400, envelope(400, "The API key must not be sent in the URL (the `key` query parameter)."))
        elif "Authorization" in self.request.headers:
            self.fail(401, envelope(401, "Request had invalid authentication credentials. Expected OAuth 2 access "
                                         "token, login cookie or other valid authentication credential."))
        elif key and "x-goog-api-key" not in self.request.headers:
            self.fail(403, envelope(403, "Method doesn't allow unregistered callers (callers without established "
                                         "identity). Please use API Key or other form of API consumer identity."))
        elif key and self.received_key() != key:
            self.fail(400, key_invalid("API key not valid. Please pass a valid API key."))
        else:
            return False
        return True

    def record(self) -> None:
        raw = self.request.body.decode(errors="replace")
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        LAST.clear()
        LAST.update(method=self.request.method, path=self.request.path, headers=dict(self.request.headers),
                    query={k: [v.decode() for v in vs] for k, vs in self.request.query_arguments.items()},
                    body=body, raw=raw)


class Models(Base):
    METHOD = "GET"

    def get(self) -> None:
        self.record()
        if self.refused():
            return
        if set(self.request.query_arguments) - {"pageSize", "pageToken"}:
            self.fail(400, envelope(400, "Unknown query parameter for models.list."))
            return
        size = self.get_query_argument("pageSize", "50")
        if not size.isdigit():
            self.fail(400, envelope(400, "pageSize must be an integer."))
            return
        models = [{"name": f"models/{m}", "displayName": m.title(), "version": "001",
                   "supportedGenerationMethods": ["generateContent", "countTokens"]} for m in MODELS]
        models.append({"name": "models/text-embedding-004", "displayName": "Text Embedding 004",
                       "supportedGenerationMethods": ["embedContent"]})
        self.finish({"models": models})


class Generate(Base):
    METHOD = "POST"

    async def post(self, model: str, method: str) -> None:
        self.record()
        if self.refused():
            return
        stream, query = method == "streamGenerateContent", LAST["query"]
        if stream and query.get("alt") != ["sse"]:
            self.fail(400, envelope(400, "streamGenerateContent is served here as SSE only: add ?alt=sse."))
            return
        if set(query) - ({"alt"} if stream else set()):
            self.fail(400, envelope(400, f"Unexpected query parameters: {sorted(query)}"))
            return
        if not self.request.headers.get("Content-Type", "").startswith("application/json"):
            self.fail(400, envelope(400, "The body must be sent as application/json."))
            return
        body = LAST["body"]
        problem = check_body(body)
        if problem:
            self.fail(400, envelope(400, problem))
            return
        if model.startswith("status-"):
            code = int(model.split("-")[1])
            self.fail(code, envelope(code, f"fake upstream says {code}"))
            return
        if model == "echo-key":
            await self.echo_key(stream)
            return
        answer = self.answer(model, body)
        if isinstance(answer, str):
            self.fail(400, envelope(400, answer))
            return
        chunks = answer if stream else [self.merge(answer)]
        if not stream:
            self.finish(chunks[0])
            return
        self.set_header("Content-Type", "text/event-stream")
        for chunk in chunks:
            self.write(b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n")
            await self.flush()
        self.finish()

    @staticmethod
    def merge(chunks: list[dict]) -> dict:
        """The non-streamed answer: the chunks' parts as one candidate, the last chunk's metadata."""
        last = dict(chunks[-1])
        if "candidates" in last:
            parts = [p for c in chunks for p in c["candidates"][0]["content"]["parts"]]
            text = "".join(p.get("text", "") for p in parts if "text" in p)
            merged = ([{"text": text}] if text else []) + [p for p in parts if "text" not in p]
            last["candidates"] = [{**last["candidates"][0], "content": {"role": "model", "parts": merged}}]
        return last

    def answer(self, model: str, body: dict) -> list[dict] | str:
        """The stream chunks of the answer, or a 400 message."""
        rid, prompt = uuid.uuid4().hex[:12], words_of(body)
        meta = {"modelVersion": f"{model}-001", "responseId": rid}

        def chunk(parts: list[dict], finish: str | None = None, done: int | None = None) -> dict:
            cand: dict = {"content": {"role": "model", "parts": parts}, "index": 0}
            if finish:
                cand["finishReason"] = finish
            usage = {"promptTokenCount": prompt, "totalTokenCount": prompt}
            if done is not None:
                usage = {"promptTokenCount": prompt, "candidatesTokenCount": done, "totalTokenCount": prompt + done}
            return {"candidates": [cand], "usageMetadata": usage, **meta}

        if model == "blocked":
            return [{"promptFeedback": {"blockReason": "SAFETY"},
                     "usageMetadata": {"promptTokenCount": prompt, "totalTokenCount": prompt}, **meta}]
        last = body["contents"][-1]
        if model in ("tool", "tool-sig"):
            results = [p["functionResponse"] for p in last["parts"] if "functionResponse" in p]
            if model == "tool-sig" and any("functionCall" in p and not p.get("thoughtSignature")
                                           for c in body["contents"] for p in c["parts"]):
                return "Function call is missing a thought_signature in functionCall parts."
            if results:
                text = "tool said: " + json.dumps(results[-1]["response"])
                return [chunk([{"text": text}], "STOP", len(text.split()))]
            decls = [d for t in body.get("tools", []) for d in t.get("functionDeclarations", [])]
            allowed = (body.get("toolConfig") or {}).get("functionCallingConfig", {}).get("allowedFunctionNames")
            decls = [d for d in decls if not allowed or d["name"] in allowed]
            if not decls:
                return "model 'tool' needs a function declaration"
            schema = decls[0].get("parametersJsonSchema") or decls[0].get("parameters") or {}
            args = {"city": "Paris"} if "city" in (schema.get("properties") or {}) else example(schema)
            part: dict = {"functionCall": {"name": decls[0]["name"], "args": args}}
            if model == "tool-sig":
                part["thoughtSignature"] = base64.b64encode(f"sig-{decls[0]['name']}".encode()).decode()
            return [chunk([part], "STOP", 3)]
        if model == "structured":
            config = body.get("generationConfig", {})
            text = json.dumps(example(config.get("responseJsonSchema") or config.get("responseSchema")))
            return [chunk([{"text": text}], "STOP", 1)]
        user = [c for c in body["contents"] if c["role"] == "user" and any("text" in p for p in c["parts"])]
        text = "echo: " + ("".join(p.get("text", "") for p in user[-1]["parts"]) if user else "")
        words = text.split(" ")
        limit = body.get("generationConfig", {}).get("maxOutputTokens")
        finish = "MAX_TOKENS" if limit is not None and limit < len(words) else "STOP"
        words = words[:max(1, limit)] if finish == "MAX_TOKENS" else words
        out = [chunk([{"text": w if i == len(words) - 1 else w + " "}]) for i, w in enumerate(words)]
        out[-1] = chunk(out[-1]["candidates"][0]["content"]["parts"], finish, len(words))
        return out

    async def echo_key(self, stream: bool) -> None:
        key = self.received_key()
        error = key_invalid(f"API key not valid: {key}. Please pass a valid API key.")
        if not stream:
            self.fail(400, error)
            return
        self.set_header("Content-Type", "text/event-stream")
        first = {"candidates": [{"content": {"role": "model", "parts": [{"text": "partial "}]}, "index": 0}]}
        self.write(b"data: " + json.dumps(first).encode() + b"\r\n\r\n")
        await self.flush()
        event = b"data: " + json.dumps(error).encode() + b"\r\n\r\n"
        half = event.index(key.encode()) + len(key) // 2 if key else len(event) // 2
        self.write(event[:half])
        await self.flush()
        self.write(event[half:])
        self.finish()


class Last(tornado.web.RequestHandler):
    def get(self) -> None:
        self.finish(dict(LAST))


class Refuse(Base):
    """Every other path and method: a 400 (a wrong path is a translation bug)."""

    def prepare(self) -> None:
        self.record()
        self.fail(400, envelope(400, f"Unknown path for this fake Gemini API: {self.request.method} "
                                     f"{self.request.path}"))


def make_app(api_key: str | None) -> tornado.web.Application:
    return tornado.web.Application([
        (r"/_last", Last),
        (r"/v1beta/models", Models),
        (r"/v1beta/models/([A-Za-z0-9._-]+):(generateContent|streamGenerateContent)", Generate),
        (r"/.*", Refuse)], api_key=api_key)


if __name__ == "__main__":
    from serve import serve  # (run as a script: this folder is on sys.path)

    serve(lambda args: make_app(args.key))
