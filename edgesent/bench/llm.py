"""The LLM-API baseline: a chat model behind any OpenAI-compatible endpoint labels the benchmarked reviews.

The seed's protocol, kept as it was, with two differences said up front:

- Prompt (`build_messages`). Reviews go `batch` at a time, numbered `1. ...` one per line; newlines
  inside a review are flattened to spaces and only its last `chars` characters are sent (reviews
  tend to end on the verdict). The instruction asks for exactly that many labels as a
  comma-separated list of 0/1 (0 = the first label, 1 = the second). Temperature 0.
- Few-shot (`pick_shots`). K examples drawn, seeded and alternating between the two labels, from
  the train split of `--data` (never from the benchmarked split), shown as an earlier user turn
  with its correct answer as the assistant turn. They are sent with every request (their tokens
  are paid for) but are never scored.
- Answers (`parse_answer`). Differs from the seed: an answer that cannot be read is never turned
  into "negative". A wrong number of labels leaves the whole batch unparsed, a single item other
  than 0/1 leaves that review unparsed; bench reports the count and the accuracy both on the
  parsed reviews and with unparsed ones counted wrong.
- Client (`ChatClient`, httpx). A request timeout; retries with exponential back-off (honouring
  `Retry-After`) on 429, 5xx and transport errors; a batch whose retries run out is counted as
  unanswered (its reviews unparsed); any other HTTP error stops the variant with one line. At most
  `concurrency` requests are in flight.
- The key. Read from the environment variable named by `key_env` (default OPENAI_API_KEY) inside
  the process that sends the requests; only the variable's *name* travels in specs and results,
  and the key is masked out of every error message. Without the variable no Authorization header
  is sent (local vLLM / llama.cpp / Ollama servers need none).

Figures (`LlmStats`): requests, retries, failed requests, unparsed reviews, prompt and completion
tokens (from the responses' `usage`), the summed request time and the wall time; with a price per
million tokens, the cost per 1,000 reviews.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from edgesent.errors import EdgesentError

RETRY_STATUS = (429, 500, 502, 503, 504)
MAX_RETRY_AFTER_S = 60.0
SYSTEM = "You are a careful sentiment classifier for movie reviews."


class LlmError(EdgesentError):
    """The endpoint refused the requests (bad key, unknown model, bad URL): the variant stops."""


@dataclass
class LlmSettings:
    """What the LLM variant needs; JSON-serializable, and holds the key's variable name, never the key."""

    endpoint: str
    model: str
    shots: int = 0
    batch: int = 10
    chars: int = 500
    price_per_mtok: list[float] | None = None  # USD per million input, output tokens
    key_env: str = "OPENAI_API_KEY"
    concurrency: int = 4
    timeout: float = 60.0
    retries: int = 5
    backoff: float = 1.0  # first retry delay in seconds, doubled each time (+ jitter)
    seed: int = 0

    @property
    def url(self) -> str:
        """The chat completions URL: given as is, or `/chat/completions` appended to a base URL (…/v1)."""
        url = self.endpoint.rstrip("/")
        return url if url.endswith("/chat/completions") else url + "/chat/completions"


def settings_from(options: dict[str, Any]) -> LlmSettings | None:
    """Settings from `edgesent.options.BenchOptions` values (`llm_*`), or None without --llm-endpoint."""
    if not options.get("llm_endpoint"):
        return None
    return LlmSettings(endpoint=options["llm_endpoint"], model=options["llm_model"], shots=options["llm_shots"],
                       batch=options["llm_batch"], chars=options["llm_chars"],
                       price_per_mtok=options.get("llm_price_per_mtok"), key_env=options["llm_key_env"],
                       concurrency=options["llm_concurrency"], timeout=options["llm_timeout"])


# --------------------------------------------------------------------------------------------
# Prompt and answers


def clip(text: str, chars: int) -> str:
    """One line (newlines and runs of whitespace flattened) holding the last `chars` characters."""
    flat = " ".join(str(text).split())
    return flat[-chars:]


def numbered(texts: list[str], chars: int) -> str:
    return "\n".join(f"{i}. {clip(t, chars)}" for i, t in enumerate(texts, 1))


def instruction(n: int, labels: list[str]) -> str:
    return (f"Classify the sentiment of each of the {n} movie reviews below, one per numbered line. "
            f"Answer with exactly {n} labels, in order, as a comma-separated list of 0 and 1 and nothing else "
            f"(0 = {labels[0]}, 1 = {labels[1]}).")


def build_messages(texts: list[str], labels: list[str], chars: int,
                   shots: list[tuple[str, int]] | None = None) -> list[dict[str, str]]:
    """The chat messages of one request: system, [few-shot user + assistant turn], the batch."""
    messages = [{"role": "system", "content": SYSTEM}]
    if shots:
        messages.append({"role": "user", "content": instruction(len(shots), labels) + "\n\n"
                         + numbered([t for t, _ in shots], chars)})
        messages.append({"role": "assistant", "content": ",".join(str(y) for _, y in shots)})
    messages.append({"role": "user", "content": instruction(len(texts), labels) + "\n\n" + numbered(texts, chars)})
    return messages


_ITEM = re.compile(r"^\s*(?:\d+\s*[.):-]\s*)?[\"'`]?\s*([01])\s*[\"'`]?\s*[.;]?\s*$")


def parse_answer(answer: str | None, n: int) -> list[int | None]:
    """The n labels of an answer such as "0,1,1" (or one per line, optionally numbered "1. 0").

    A wrong number of items gives n Nones (the answer cannot be aligned with the reviews); an item
    that is not 0 or 1 gives None at its place. Code fences and surrounding brackets are ignored.
    """
    if not answer:
        return [None] * n
    text = answer.strip().strip("`").strip()
    text = re.sub(r"^(?:json|text)\s*", "", text).strip().strip("[]()").strip()
    items = [x for x in re.split(r"[,\n]", text) if x.strip()]
    if len(items) != n:
        return [None] * n
    out: list[int | None] = []
    for item in items:
        m = _ITEM.match(item)
        out.append(int(m.group(1)) if m else None)
    return out


def pick_shots(texts: list[str], labels: list[int], k: int, seed: int = 0) -> list[tuple[str, int]]:
    """k examples, alternating label 1 / label 0 as far as each lasts, drawn seeded from (texts, labels)."""
    if k <= 0:
        return []
    rng = random.Random(seed)
    pools = {y: [i for i, lab in enumerate(labels) if lab == y] for y in (0, 1)}
    for pool in pools.values():
        rng.shuffle(pool)
    picked: list[int] = []
    order = [1, 0]
    while len(picked) < k and any(pools.values()):
        y = order[len(picked) % 2]
        pool = pools[y] or pools[1 - y]
        picked.append(pool.pop())
    if len(picked) < k:
        raise EdgesentError(f"--llm-shots {k}: the train split has only {len(picked)} usable examples")
    return [(texts[i], int(labels[i])) for i in picked]


# --------------------------------------------------------------------------------------------
# Client


@dataclass
class Reply:
    content: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    seconds: float
    retries: int
    error: str | None = None  # retries exhausted: the reason


class ChatClient:
    """POSTs chat completions with a timeout and back-off retries; the key stays in this object."""

    def __init__(self, settings: LlmSettings, environ: dict[str, str] | None = None):
        import httpx

        self.settings = settings
        env = os.environ if environ is None else environ
        self._key = env.get(settings.key_env) or None
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        limits = httpx.Limits(max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency)
        self.http = httpx.Client(headers=headers, timeout=settings.timeout, limits=limits)
        self.auth = f"bearer token from ${settings.key_env}" if self._key else f"none (${settings.key_env} is not set)"

    def close(self) -> None:
        self.http.close()

    def redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return min(max(float(retry_after), 0.0), MAX_RETRY_AFTER_S)
            except ValueError:
                pass
        base = self.settings.backoff * 2 ** attempt
        return min(base + random.uniform(0, base / 2), MAX_RETRY_AFTER_S)

    def chat(self, messages: list[dict[str, str]]) -> Reply:
        import httpx

        s = self.settings
        body = {"model": s.model, "messages": messages, "temperature": 0}
        start, reason, retry_after = time.perf_counter(), "", None
        for attempt in range(s.retries + 1):
            if attempt:
                time.sleep(self._delay(attempt - 1, retry_after))
            retry_after = None
            try:
                response = self.http.post(s.url, json=body)
            except httpx.TransportError as exc:  # connection refused/reset, timeouts
                reason = f"{type(exc).__name__}: {self.redact(str(exc))[:200]}"
                continue
            if response.status_code in RETRY_STATUS:
                retry_after = response.headers.get("retry-after")
                reason = f"HTTP {response.status_code}"
                continue
            if response.status_code >= 400:
                raise LlmError(self._refusal(response))
            return self._reply(response, time.perf_counter() - start, attempt)
        return Reply(None, None, None, time.perf_counter() - start, s.retries, error=f"{reason} after {s.retries} retries")

    def _refusal(self, response) -> str:
        try:
            detail = response.json().get("error", {})
            detail = detail.get("message", "") if isinstance(detail, dict) else str(detail)
        except ValueError:
            detail = response.text
        hint = f" (check the key in ${self.settings.key_env})" if response.status_code in (401, 403) else ""
        first = self.redact(" ".join(str(detail).split()))[:200]
        return f"--llm-endpoint {self.settings.url}: HTTP {response.status_code}{hint}" + (f": {first}" if first else "")

    def _reply(self, response, seconds: float, retries: int) -> Reply:
        try:
            data = response.json()
            content = data["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return Reply(None, None, None, seconds, retries)  # a malformed response: the batch is unparsed
        usage = data.get("usage") or {}
        return Reply(content if isinstance(content, str) else None, usage.get("prompt_tokens"),
                     usage.get("completion_tokens"), seconds, retries)


# --------------------------------------------------------------------------------------------
# Classifying a list of texts


@dataclass
class LlmStats:
    model: str
    endpoint: str
    auth: str
    shots: int
    batch: int
    chars: int
    reviews: int = 0
    requests: int = 0
    retries: int = 0
    failed_requests: int = 0
    unparsed: int = 0
    prompt_tokens: int | None = 0
    completion_tokens: int | None = 0
    request_seconds: float = 0.0
    wall_seconds: float = 0.0
    price_per_mtok: list[float] | None = None
    last_failure: str | None = None
    derived: dict[str, float | None] = field(default_factory=dict)

    def add(self, reply: Reply, n: int, parsed: list[int | None]) -> None:
        self.requests += 1
        self.retries += reply.retries
        self.request_seconds += reply.seconds
        self.unparsed += sum(p is None for p in parsed)
        if reply.error:
            self.failed_requests += 1
            self.last_failure = reply.error
        else:
            self.prompt_tokens = None if self.prompt_tokens is None or reply.prompt_tokens is None \
                else self.prompt_tokens + reply.prompt_tokens
            self.completion_tokens = None if self.completion_tokens is None or reply.completion_tokens is None \
                else self.completion_tokens + reply.completion_tokens

    def finish(self) -> dict[str, Any]:
        n = max(self.reviews, 1)
        cost = None
        if self.price_per_mtok and self.prompt_tokens is not None and self.completion_tokens is not None:
            p_in, p_out = self.price_per_mtok
            cost = (self.prompt_tokens * p_in + self.completion_tokens * p_out) / 1e6 / n * 1000
        self.derived = {"reviews_per_s": self.reviews / self.wall_seconds if self.wall_seconds else None,
                        "latency_per_review_ms": 1000 * self.request_seconds / n,
                        "mean_request_ms": 1000 * self.request_seconds / max(self.requests, 1),
                        "cost_per_1k_usd": cost}
        return asdict(self)


def classify(texts: list[str], labels: list[str], settings: LlmSettings, shots: list[tuple[str, int]] | None = None,
             client: ChatClient | None = None) -> tuple[list[int | None], dict[str, Any]]:
    """(label id or None per text, stats) from the endpoint, `settings.batch` reviews per request."""
    if len(labels) != 2:
        raise EdgesentError(f"the LLM baseline answers 0/1 and needs two labels, the target has {len(labels)}")
    own = client is None
    client = client or ChatClient(settings)
    stats = LlmStats(settings.model, settings.url, client.auth, len(shots or []), settings.batch, settings.chars,
                     reviews=len(texts), price_per_mtok=settings.price_per_mtok)
    preds: list[int | None] = [None] * len(texts)
    lock = threading.Lock()

    def one(start: int) -> None:
        chunk = texts[start:start + settings.batch]
        reply = client.chat(build_messages(chunk, labels, settings.chars, shots))
        parsed = parse_answer(reply.content, len(chunk))
        with lock:
            preds[start:start + len(chunk)] = parsed
            stats.add(reply, len(chunk), parsed)

    began = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=settings.concurrency)
    try:
        for future in [pool.submit(one, i) for i in range(0, len(texts), settings.batch)]:
            future.result()  # an LlmError (refused request) stops the variant here
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # after a refusal, batches not yet sent are never sent
        if own:
            client.close()
    stats.wall_seconds = time.perf_counter() - began
    if texts and stats.failed_requests == stats.requests:
        raise LlmError(f"--llm-endpoint {settings.url}: every request failed ({stats.last_failure})")
    return preds, stats.finish()
