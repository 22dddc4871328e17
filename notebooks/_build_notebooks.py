"""Regenerates the demo notebooks (outputs stripped). Run: .venv/bin/python notebooks/_build_notebooks.py"""
import nbformat as nbf
from nbformat.v4 import new_notebook, new_markdown_cell as md, new_code_cell as code

META = {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}}

def save(name, cells):
    nb = new_notebook(cells=cells, metadata=META)
    for i, c in enumerate(nb.cells):
        c["id"] = f"{name[:2]}-{i:02d}"
    nbf.write(nb, f"notebooks/{name}")

save("01_quickstart.ipynb", [
    md("# bodhi_nb quickstart\n\nOne gateway to every model, from this notebook. This page needs **no API key and no network**: "
       "it chats with SmolLM2-135M, a small model bundled by the `local` extra and served by llama.cpp on this machine.\n\n"
       "Run the cells from the top. The panel below has three tabs: **Chat**, **API models** (remote providers, keys "
       "encrypted at rest) and **Local aliases**."),
    code("import bodhi_nb\n\nbodhi_nb.panel()"),
    md("## The same models from Python\n\n`Bodhi()` is the notebook facade. `models()` lists every name the gateway serves "
       "(API models first, then local ones)."),
    code("# NBVAL_CHECK_OUTPUT\nfrom bodhi_nb import Bodhi\n\nb = Bodhi()\nprint(\"smollm2:135m\" in b.models())"),
    md("Stream a reply token by token (the first call starts the local engine, which takes a second or two):"),
    code("for text in b.chat(\"smollm2:135m\", \"Say hello in five words.\", stream=True, max_tokens=24, temperature=0):\n"
         "    print(text, end=\"\", flush=True)"),
    md("Or take the whole reply at once, or the full OpenAI response:"),
    code("# NBVAL_CHECK_OUTPUT\nreply = b.chat(\"smollm2:135m\", \"What is 2 + 2?\", max_tokens=12, temperature=0)\n"
         "print(type(reply).__name__, len(reply) > 0)"),
    code("# NBVAL_CHECK_OUTPUT\nresp = b.completion(\"smollm2:135m\", \"Hi\", max_tokens=4)\nprint(resp[\"object\"], sorted(resp[\"usage\"]))"),
    md("`explain()` says which provider serves a name, and why:"),
    code("# NBVAL_CHECK_OUTPUT\nfor c in b.explain(\"smollm2:135m\"):\n    print(c.source, c.name, c.won, c.reason)"),
])

save("02_remote_api_models.ipynb", [
    md("# Remote API models\n\nRegister an OpenAI-compatible provider (base URL + API key), fetch its models, run a test prompt, "
       "chat through the router, update it without re-entering the key, and see how names are routed.\n\n"
       "With `OPENAI_API_KEY` set, this uses OpenAI itself. Without it, the notebook starts a real OpenAI-compatible "
       "server on 127.0.0.1 (llama.cpp serving the bundled model, protected by a random key) to play the provider."),
    code("import os, secrets, socket, subprocess, sys, time\n\nimport httpx\n\n"
         "from bodhi_nb import Bodhi\n"
         "from bodhi_nb.services.data_service import LocalModels\n\n"
         "provider = None\n"
         "if os.environ.get(\"OPENAI_API_KEY\"):\n"
         "    base_url, api_key = \"https://api.openai.com/v1\", os.environ[\"OPENAI_API_KEY\"]\n"
         "else:\n"
         "    with socket.socket() as s:\n"
         "        s.bind((\"127.0.0.1\", 0))\n"
         "        port = s.getsockname()[1]\n"
         "    api_key = \"sk-local-\" + secrets.token_hex(16)  # a throwaway key the local provider demands\n"
         "    provider = subprocess.Popen(\n"
         "        [sys.executable, \"-m\", \"llama_cpp.server\", \"--model\", str(LocalModels.builtin_path()),\n"
         "         \"--model_alias\", \"smollm2-135m-instruct\", \"--n_threads\", \"2\", \"--port\", str(port),\n"
         "         \"--host\", \"127.0.0.1\", \"--api_key\", api_key],\n"
         "        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
         "    base_url = f\"http://127.0.0.1:{port}/v1\"\n"
         "    for _ in range(300):  # wait until it answers (at most 30 s)\n"
         "        try:\n"
         "            if httpx.get(f\"{base_url}/models\", headers={\"Authorization\": f\"Bearer {api_key}\"}).status_code == 200:\n"
         "                break\n"
         "        except httpx.HTTPError:\n"
         "            pass\n"
         "        time.sleep(0.1)\n"
         "b = Bodhi()"),
    md("Ask the provider which models it has, before storing anything:"),
    code("available = b.api_models.fetch_models(base_url=base_url, api_key=api_key)\n"
         "model = \"gpt-4o-mini\" if \"gpt-4o-mini\" in available else available[0]\nprint(len(available) > 0)"),
    md("Register it. The key is encrypted (AES-256-GCM) in the store; what comes back is only a mask:"),
    code("# NBVAL_CHECK_OUTPUT\nif \"demo\" in [m[\"id\"] for m in b.api_models.list()]:\n    b.api_models.delete(\"demo\")\n"
         "rec = b.api_models.create(\"demo\", base_url, api_key=api_key, models=[model], prefix=\"demo/\")\n"
         "print(rec[\"has_api_key\"], \"api_key\" in rec, rec[\"api_key_masked\"] != api_key)"),
    code("# NBVAL_CHECK_OUTPUT\nres = b.api_models.test(model, \"Say hi\", id=\"demo\")\nprint(res[\"success\"])"),
    md("Chat through the router: `demo/` + the upstream name. The prefix is stripped before forwarding."),
    code("print(b.chat(f\"demo/{model}\", \"Name a fruit.\", max_tokens=16))"),
    md("Change the model list without touching the key; the stored key is kept:"),
    code("# NBVAL_CHECK_OUTPUT\nrec = b.api_models.update(\"demo\", models=available[:3])\n"
         "print(rec[\"has_api_key\"], b.api_models.test(model, \"ok?\", id=\"demo\")[\"success\"])"),
    code("# NBVAL_CHECK_OUTPUT\nfor c in b.explain(f\"demo/{model}\"):\n    print(c.source, c.name, c.rule, c.won)"),
    code("b.api_models.delete(\"demo\")\nif provider is not None:\n    provider.terminate()\n    provider.wait()"),
])

save("03_gateway_from_any_kernel.ipynb", [
    md("# The gateway from any kernel\n\nThe Jupyter server itself serves OpenAI-compatible endpoints under "
       "`{base_url}bodhi/v1/`. Any kernel (or any program that has the Jupyter token) can use every registered model "
       "**without ever holding a provider key**: the server adds it upstream."),
    code("import bodhi_nb\n\nserver = bodhi_nb.server_info()  # found from JUPYTER_*/BODHI_GATEWAY_* variables or runtime files\nprint(server.gateway_url)"),
    md("## The official `openai` SDK"),
    code("client = bodhi_nb.openai_client()\n"
         "# NBVAL_CHECK_OUTPUT\nprint(\"smollm2:135m\" in [m.id for m in client.models.list()])"),
    code("r = client.chat.completions.create(model=\"smollm2:135m\", messages=[{\"role\": \"user\", \"content\": \"Hi!\"}],\n"
         "                                   max_tokens=16)\nprint(r.choices[0].message.content)"),
    code("stream = client.chat.completions.create(model=\"smollm2:135m\", stream=True, max_tokens=16,\n"
         "                                        messages=[{\"role\": \"user\", \"content\": \"Count to five.\"}])\n"
         "for chunk in stream:\n    if chunk.choices:\n        print(chunk.choices[0].delta.content or \"\", end=\"\")"),
    md("## Plain HTTP with `httpx`"),
    code("# NBVAL_CHECK_OUTPUT\nimport httpx\n\nheaders = {\"Authorization\": f\"Bearer {server.token}\"}\n"
         "r = httpx.post(f\"{server.gateway_url}/chat/completions\", headers=headers, timeout=120,\n"
         "               json={\"model\": \"smollm2:135m\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello\"}], \"max_tokens\": 8})\n"
         "print(r.status_code, r.json()[\"object\"], \"x-bodhi-overhead-ms\" in r.headers)"),
    code("# NBVAL_CHECK_OUTPUT\nr = httpx.post(f\"{server.gateway_url}/chat/completions\", headers=headers,\n"
         "               json={\"model\": \"no-such-model\", \"messages\": [{\"role\": \"user\", \"content\": \"x\"}]})\n"
         "print(r.status_code, r.json()[\"error\"][\"code\"])"),
    md("## From a shell or another language\n\nThe same request with curl (the token is your Jupyter token):"),
    code("print(f\"curl -H 'Authorization: Bearer $JUPYTER_TOKEN' -H 'Content-Type: application/json' \\\\\\n\"\n"
         "      f\"  -d '{{\\\"model\\\": \\\"smollm2:135m\\\", \\\"messages\\\": [{{\\\"role\\\": \\\"user\\\", \\\"content\\\": \\\"Hi\\\"}}]}}' \\\\\\n\"\n"
         "      f\"  {server.gateway_url}/chat/completions\")"),
])

save("04_local_aliases.ipynb", [
    md("# Local aliases\n\nA *user alias* gives a local GGUF file a name of your own plus default request parameters "
       "(used only where a request leaves them unset) and llama.cpp server parameters. Aliases are YAML files in "
       "`$BODHI_HOME/aliases/`. GGUF files in the Hugging Face cache are discovered automatically as `owner/repo:QUANT`."),
    code("from bodhi_nb import Bodhi\n\nb = Bodhi()\n"
         "# NBVAL_CHECK_OUTPUT\nprint([m[\"alias\"] for m in b.aliases.models()][:1])"),
    code("# NBVAL_CHECK_OUTPUT\nfor name in (\"terse\", \"roomy\"):\n    if name in [a[\"alias\"] for a in b.aliases.list()]:\n        b.aliases.delete(name)\n"
         "b.aliases.create(\"terse\", repo=\"HuggingFaceTB/SmolLM2-135M-Instruct\", filename=\"SmolLM2-135M-Instruct.Q4_1.gguf\",\n"
         "                 request_params={\"max_tokens\": 8, \"temperature\": 0}, context_params={\"n_ctx\": 512})\n"
         "b.aliases.create(\"roomy\", repo=\"HuggingFaceTB/SmolLM2-135M-Instruct\", filename=\"SmolLM2-135M-Instruct.Q4_1.gguf\",\n"
         "                 request_params={\"max_tokens\": 48}, context_params={\"n_ctx\": 2048})\n"
         "print(sorted(a[\"alias\"] for a in b.aliases.list()))"),
    md("`terse` caps replies at 8 tokens unless a request says otherwise:"),
    code("# NBVAL_CHECK_OUTPUT\nr = b.completion(\"terse\", \"Tell me a long story.\")\nprint(r[\"usage\"][\"completion_tokens\"] <= 8)"),
    md("Switching to an alias with other server parameters restarts the engine (one model at a time, as in BodhiApp):"),
    code("# NBVAL_CHECK_OUTPUT\nfirst = b.services.engine.status()[\"pid\"]\nprint(b.chat(\"roomy\", \"Hi\", max_tokens=4) is not None)\n"
         "second = b.services.engine.status()\nprint(second[\"alias\"], second[\"pid\"] != first)"),
    code("# NBVAL_CHECK_OUTPUT\nfor name in (\"terse\", \"roomy\"):\n    b.aliases.delete(name)\nprint(b.aliases.list())"),
])

save("05_batch_over_a_dataframe.ipynb", [
    md("# Batch over a DataFrame\n\n`Bodhi.map` runs one prompt over every row of a list, a Series or a DataFrame: at most "
       "`concurrency` requests in flight, retries that honour `Retry-After` on 429/5xx, a failed row never stops the "
       "others, and every finished row is kept in a response cache on disk, so re-running a cell (or resuming after an "
       "interrupt or a crash) only asks for what is missing.\n\n"
       "This page uses the bundled SmolLM2-135M model: no API key, no network. Tiny `max_tokens` keep it fast."),
    code("import pandas as pd\n\nfrom bodhi_nb import Bodhi\n\nb = Bodhi()\n"
         "reviews = pd.DataFrame({\"review\": [\n"
         "    \"I loved this film, wonderful acting.\", \"Terrible. I want my money back.\",\n"
         "    \"Great food and friendly staff.\", \"The battery died after a day.\",\n"
         "    \"Best purchase this year!\", \"Boring and far too long.\"]})\n"
         "TEMPLATE = \"Classify the sentiment of this review as positive or negative.\\nReview: {review}\\nSentiment:\"\n"
         "SYSTEM = \"You are a sentiment classifier. Reply with exactly one word: positive or negative.\"\nreviews"),
    md("A `str.format` template over the columns makes each row's prompt. The progress bar shows rows done and failed "
       "and tokens used. The result is a **new** DataFrame (the input columns plus `reply` and `error`); `reviews` "
       "itself is not modified. (A 135M-parameter model is a weak judge of sentiment; point `model` at an "
       "API model for real work: nothing else changes.)"),
    code("# NBVAL_CHECK_OUTPUT\nout = b.map(\"smollm2:135m\", reviews, template=TEMPLATE, system=SYSTEM,\n"
         "            max_tokens=3, temperature=0, concurrency=2)\n"
         "assert list(out.columns) == [\"review\", \"reply\", \"error\"] and list(reviews.columns) == [\"review\"]\n"
         "print(list(out.columns), out[\"error\"].isna().all(), list(reviews.columns))"),
    code("out"),
    md("## Re-run from the cache\n\nThe same call again is answered from the cache (`$BODHI_HOME/cache.sqlite`, shared "
       "by the server and every kernel): no model call, the same replies. An interrupted job resumes the same way."),
    code("# NBVAL_CHECK_OUTPUT\nagain = b.map(\"smollm2:135m\", reviews, template=TEMPLATE, system=SYSTEM,\n"
         "              max_tokens=3, temperature=0, concurrency=2)\n"
         "assert (again[\"reply\"] == out[\"reply\"]).all()\nprint((again[\"reply\"] == out[\"reply\"]).all())"),
    md("A list in gives a list of `MapResult`s, in input order, each saying whether it came from the cache:"),
    code("# NBVAL_CHECK_OUTPUT\nprompts = [TEMPLATE.format(review=r) for r in reviews[\"review\"]]\n"
         "results = b.map(\"smollm2:135m\", prompts, system=SYSTEM,\n"
         "                max_tokens=3, temperature=0, concurrency=2, progress=False)\n"
         "assert all(r.cached for r in results)\nprint([r.cached for r in results], all(r.error is None for r in results))"),
    md("## Structured output\n\nWith a pydantic model as `response_format`, its JSON schema is sent with each request "
       "(for local models llama.cpp turns it into a grammar, so the reply is valid JSON) and each reply is validated "
       "into `parsed`; in a DataFrame its fields become columns."),
    code("# NBVAL_CHECK_OUTPUT\nfrom typing import Literal\n\nfrom pydantic import BaseModel\n\n\n"
         "class Sentiment(BaseModel):\n    sentiment: Literal[\"positive\", \"negative\"]\n\n\n"
         "labelled = b.map(\"smollm2:135m\", reviews.head(2), template=\"Is this review positive or negative? {review}\",\n"
         "                 response_format=Sentiment, max_tokens=12, temperature=0, concurrency=2)\n"
         "print(list(labelled.columns), set(labelled[\"sentiment\"]) <= {\"positive\", \"negative\"})"),
    md("## The cache\n\n`b.cache.stats()` counts entries and bytes (bounded, least recently used entries evicted first; "
       "512 MB by default); `b.cache.clear()` empties it. Chat calls use it only when asked: `b.chat(..., cache=True)`."),
    code("# NBVAL_CHECK_OUTPUT\nstats = b.cache.stats()\nprint(stats[\"entries\"] >= 8, stats[\"hits\"] >= 12)"),
    md("## Router aliases\n\nA router alias is one name over an ordered list of models. A request tries them in order; "
       "one that answers 429, 5xx or cannot be reached is skipped and cools down (for its `Retry-After`, else "
       "`cooldown_seconds`), so a long `map` keeps going on the next provider instead of failing. Here the first "
       "target is an API model whose server is down (nothing listens on that port), the second the bundled model."),
    code("# NBVAL_CHECK_OUTPUT\nb.api_models.create(\"down\", \"http://127.0.0.1:9/v1\", models=[\"big-model\"])\n"
         "b.router_aliases.create(\"sentiment\", [\"big-model\", \"smollm2:135m\"], cooldown_seconds=300)\n"
         "routed = b.map(\"sentiment\", reviews, template=TEMPLATE, system=SYSTEM,\n"
         "               max_tokens=2, temperature=0, concurrency=2)\n"
         "print(routed[\"error\"].isna().all())\n"
         "for t in b.explain(\"sentiment\")[0].targets:  # big-model cools down; no request goes to it until then\n"
         "    print(t.name, t.state)"),
    md("Each answer says which target gave it (`.target` here, the `x-bodhi-target` header over HTTP):"),
    code("# NBVAL_CHECK_OUTPUT\nprint(b.completion(\"sentiment\", \"Hi\", max_tokens=2).target)\n"
         "b.router_aliases.delete(\"sentiment\")\nb.api_models.delete(\"down\")"),
])

save("06_magic_and_models.ipynb", [
    md("# The `%%bodhi` magic, and more local models\n\n`%load_ext bodhi_nb` adds a cell magic: the cell is the prompt, "
       "`{name}` takes a variable from the notebook, and the reply streams in as Markdown. "
       "Options: `-o VAR` (also keep the reply in `VAR`; it is always in `_bodhi`), `-s SYSTEM`, `--max-tokens N`, "
       "`--temperature T`, `--format markdown|text|json|code`, `--no-stream`, `--cache`."),
    code("%load_ext bodhi_nb"),
    code("topic = \"the colour of the sky\""),
    code("%%bodhi smollm2:135m -o answer --max-tokens 24 --temperature 0\nIn one short sentence, describe {topic}."),
    code("# NBVAL_CHECK_OUTPUT\nprint(type(answer).__name__, len(answer) > 0, answer == _bodhi)"),
    md("`--format text` shows the reply as plain text; `-s` sets a system prompt:"),
    code("%%bodhi smollm2:135m -s \"Answer with one word.\" --format text --max-tokens 8 --temperature 0\nName a fruit."),
    md("Line forms: `%bodhi models` lists every name the gateway serves, `%bodhi explain NAME` says who serves it "
       "(and `%bodhi usage` shows the usage ledger where this version keeps one). Errors are one line:"),
    code("%bodhi models"),
    code("%bodhi explain smollm2:135m"),
    code("%%bodhi no-such-model\nHello?"),
    md("## Pull a GGUF model from the Hugging Face Hub\n\n"
       "Any GGUF repo on the Hub becomes a model name. From a terminal:\n\n"
       "```bash\nbodhi-nb pull bartowski/SmolLM2-360M-Instruct-GGUF:Q4_K_M\n```\n\n"
       "or from Python, with a progress bar:\n\n"
       "```python\nb.aliases.pull(\"bartowski/SmolLM2-360M-Instruct-GGUF:Q4_K_M\")\n```\n\n"
       "or in the panel's **Local aliases** tab (the *Pull GGUF* box), or over HTTP: "
       "`POST bodhi/v1/modelfiles/pull {\"model\": ...}` answers with a job whose progress "
       "`GET bodhi/v1/modelfiles/pull/{id}` reports. `owner/repo:QUANT` picks the file with that quant "
       "(an unknown or ambiguous quant is refused with the repo's choices), `owner/repo/file.gguf` names a file. "
       "The file lands in the Hugging Face cache (resumed if the connection drops; `HF_ENDPOINT` and `HF_TOKEN` "
       "are honoured) and is served at once as `owner/repo:QUANT`. This notebook does not download anything: "
       "it runs offline."),
    md("## jupyter-ai on the gateway\n\nWith jupyter-ai 3 installed, `bodhi_nb.configure_jupyter_ai()` points its "
       "`%%ai` aliases (`bodhi`, `bodhi/<model>`) and Jupyternaut's chat model at this gateway. It writes only the "
       "gateway URL; the key is the Jupyter token, read from `OPENAI_API_KEY` when a request is sent."),
])
