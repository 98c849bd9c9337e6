"""The LLM-API baseline row of `edgesent bench`, against a local OpenAI-compatible server started here.

The server (http.server on 127.0.0.1, one thread per request) answers by a keyword rule, refuses the
first request with 429, and garbles some answers by a rule on the batch's first review (a missing
label, or a word instead of 0/1), so the test knows each review's expected prediction without
asking the code under test. Checks: accuracy on parsed reviews and with unparsed counted wrong, the
unparsed count, the retried 429, the concurrency cap, few-shot examples sent but never scored, and
the API key absent from every file bench writes (and from the worker's spec).
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import POS, write_sentiment_data
from test_bench import make_artifact, make_run

from edgesent.bench import bench, llm
from edgesent.bench.plan import Target, plan_variants
from edgesent.data import load_split
from edgesent.errors import EdgesentError
from edgesent.options import BenchOptions

KEY = "sk-test-S3CRET-0123456789abcdef"
KEY_ENV = "EDGESENT_TEST_LLM_KEY"
CHARS = 60
RULE_WORDS = POS[:6]  # an imperfect rule: reviews praised with other words are called negative


def rule(review: str) -> int:
    return int(any(w in review.split() for w in RULE_WORDS))


def garble(first_review: str) -> str:
    """How the server spoils the answer of a batch: 'short' (a label missing), 'word' (item 2 unreadable), ''."""
    return {0: "short", 1: "word"}.get(zlib.crc32(first_review.encode()) % 3, "")


class FakeOpenAI(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, mode: str = "ok"):
        super().__init__(("127.0.0.1", 0), Handler)
        self.mode, self.lock = mode, threading.Lock()
        self.requests: list[dict] = []  # {"auth":..., "body":...} per POST, 429s included
        self.inflight = self.max_inflight = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class Handler(BaseHTTPRequestHandler):
    server: FakeOpenAI

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802 - http.server's name
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with srv.lock:
            srv.requests.append({"auth": self.headers.get("Authorization"), "path": self.path, "body": body})
            first = len(srv.requests) == 1
            srv.inflight += 1
            srv.max_inflight = max(srv.max_inflight, srv.inflight)
        try:
            time.sleep(0.02)
            if srv.mode == "refuse":
                return self._send(401, {"error": {"message": f"Incorrect API key provided: {KEY}"}})
            if srv.mode == "down" or first:
                return self._send(503 if srv.mode == "down" else 429, {"error": {"message": "slow down"}},
                                  {"Retry-After": "0"})
            reviews = [line.split(". ", 1)[1] for line in body["messages"][-1]["content"].split("\n\n", 1)[1].splitlines()]
            labels = [str(rule(r)) for r in reviews]
            kind = garble(reviews[0])
            if kind == "short":
                labels = labels[:-1]
            elif kind == "word" and len(labels) > 1:
                labels[1] = "positive-ish"
            self._send(200, {"choices": [{"message": {"role": "assistant", "content": ", ".join(labels)}}],
                             "usage": {"prompt_tokens": 100, "completion_tokens": 2 * len(reviews)}})
        finally:
            with srv.lock:
                srv.inflight -= 1


@pytest.fixture
def server(request):
    srv = FakeOpenAI(getattr(request, "param", "ok"))
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_sentiment_data(tmp_path_factory.mktemp("llm-data"), n_train=40, n_val=10, n_test=57)


@pytest.fixture(scope="module")
def artifact(model_factory, data_dir, tmp_path_factory) -> Path:
    run = make_run(model_factory("bert"), data_dir, tmp_path_factory.mktemp("llm") / "run")
    return make_artifact(run, run / "artifact")


def expected(texts: list[str], batch: int) -> list[int | None]:
    """Each review's prediction as the server's rules make it (independent of the code under test)."""
    out: list[int | None] = []
    for i in range(0, len(texts), batch):
        chunk = [" ".join(t.split())[-CHARS:] for t in texts[i:i + batch]]
        preds: list[int | None] = [rule(r) for r in chunk]
        kind = garble(chunk[0])
        if kind == "short":
            preds = [None] * len(chunk)
        elif kind == "word" and len(chunk) > 1:
            preds[1] = None
        out += preds
    return out


# --------------------------------------------------------------------------------------------


def test_bench_llm_row_against_a_local_server(server, artifact, data_dir, tmp_path, monkeypatch):
    from edgesent.bench import worker

    monkeypatch.setenv(KEY_ENV, KEY)
    specs: list[str] = []
    save = worker.WorkerSpec.save

    def spy(self, path):
        out = save(self, path)
        specs.append(path.read_text())
        return out

    monkeypatch.setattr(worker.WorkerSpec, "save", spy)
    out = bench(artifact, device="cuda", data=str(data_dir), out=tmp_path / "b", show=False, batch_sizes=[1],
                seq_lens=[8], threads=[1], budget=0.05, llm_endpoint=server.url, llm_model="test/fake-gpt:1",
                llm_shots=4, llm_batch=10, llm_chars=CHARS, llm_price_per_mtok=[2.0, 8.0], llm_key_env=KEY_ENV,
                llm_concurrency=2)

    results = json.loads((out / "results.json").read_text())
    row = next(v for v in results["variants"] if v["engine"] == "llm")
    assert row["name"] == "llm-test-fake-gpt-1" and row["device"] == "api" and row["status"] == "ok", row
    test = load_split(str(data_dir), "test")
    want = expected(test.texts, 10)
    kinds = {garble(" ".join(t.split())[-CHARS:]) for t in test.texts[::10]}
    assert {"short", "word", ""} <= kinds, "the data must exercise both malformed answers"
    parsed = [(p, y) for p, y in zip(want, test.labels, strict=True) if p is not None]
    n = len(test.texts)
    assert row["unparsed"] == n - len(parsed) > 0
    assert row["accuracy_parsed"] == pytest.approx(sum(p == y for p, y in parsed) / len(parsed))
    assert row["accuracy"] == pytest.approx(sum(p == y for p, y in parsed) / n)
    assert row["accuracy"] < row["accuracy_parsed"] < 1.0

    stats = row["llm"]
    batches = -(-n // 10)
    assert stats["requests"] == batches and stats["retries"] == 1 and stats["failed_requests"] == 0
    assert len(server.requests) == batches + 1  # the 429 was retried, nothing else was sent (no warm-up)
    assert 1 <= server.max_inflight <= 2
    assert all(r["auth"] == f"Bearer {KEY}" and r["path"] == "/v1/chat/completions" for r in server.requests)
    assert all(r["body"]["temperature"] == 0 and r["body"]["model"] == "test/fake-gpt:1" for r in server.requests)
    # cost: 100 prompt tokens per request at $2/M + 2 completion tokens per review at $8/M, per 1,000 reviews
    cost = (100 * batches * 2.0 + 2 * n * 8.0) / 1e6 / n * 1000
    assert stats["derived"]["cost_per_1k_usd"] == pytest.approx(cost)
    assert stats["derived"]["latency_per_review_ms"] > 0 and row["throughput"][0]["texts_per_s"] > 0

    # few-shot: 4 train examples in an earlier turn with their answer, sent every time, never scored
    train = {" ".join(t.split())[-CHARS:] for t in load_split(str(data_dir), "train").texts}
    tested = {" ".join(t.split())[-CHARS:] for t in test.texts}
    scored = 0
    for r in server.requests[1:]:
        msgs = r["body"]["messages"]
        assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
        shots = [line.split(". ", 1)[1] for line in msgs[1]["content"].split("\n\n", 1)[1].splitlines()]
        assert len(shots) == 4 and set(shots) <= train and not set(shots) & tested
        assert msgs[2]["content"].count(",") == 3
        scored += len(msgs[3]["content"].split("\n\n", 1)[1].splitlines())
    assert scored == n == stats["reviews"]

    # the key is nowhere on disk: not in the worker's spec, not in any output file
    llm_specs = [s for s in specs if '"engine": "llm"' in s]
    assert llm_specs and all(KEY not in s for s in specs) and KEY_ENV in llm_specs[0]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"results.json", "results.csv", "report.md"}
    assert all(KEY.encode() not in p.read_bytes() for p in files)
    report = (out / "report.md").read_text()
    assert "### LLM-API baseline" in report and f"bearer token from ${KEY_ENV}" in report
    assert "llm-test-fake-gpt-1" in (out / "results.csv").read_text()


@pytest.mark.parametrize("server", ["refuse"], indirect=True)
def test_refused_key_is_one_line_without_the_key(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    settings = llm.LlmSettings(endpoint=server.url, model="m", key_env=KEY_ENV, backoff=0)
    with pytest.raises(llm.LlmError) as info:
        llm.classify(["a fine film"] * 25, ["negative", "positive"], settings)
    message = str(info.value)
    assert message.startswith(f"--llm-endpoint {server.url}/chat/completions: HTTP 401 (check the key in ${KEY_ENV})")
    assert KEY not in message and "Incorrect API key provided: ***" in message
    assert len(server.requests) <= settings.concurrency  # batches not yet sent are never sent


@pytest.mark.parametrize("server", ["down"], indirect=True)
def test_retries_run_out_then_one_error(server):
    settings = llm.LlmSettings(endpoint=server.url + "/chat/completions", model="m", retries=2, backoff=0,
                               key_env=KEY_ENV)
    with pytest.raises(llm.LlmError, match=r"every request failed \(HTTP 503 after 2 retries\)"):
        llm.classify(["x", "y"], ["negative", "positive"], settings)
    assert len(server.requests) == 3 and server.requests[0]["auth"] is None  # no key set: no header


@pytest.mark.parametrize(("answer", "n", "want"), [
    ("0,1,1", 3, [0, 1, 1]), (" 1, 0 ,1.\n", 3, [1, 0, 1]), ("[0, 1]", 2, [0, 1]), ("```\n0,1\n```", 2, [0, 1]),
    ("1. 0\n2. 1\n3. 1", 3, [0, 1, 1]), ("0,1", 3, [None] * 3), ("0,maybe,1", 3, [0, None, 1]), ("", 2, [None] * 2),
    (None, 1, [None]), ("0,2", 2, [0, None]), ("positive, negative", 2, [None, None]),
])
def test_parse_answer(answer, n, want):
    assert llm.parse_answer(answer, n) == want


def test_prompt_flattens_clips_and_numbers():
    msgs = llm.build_messages(["first line\nsecond   line", "x" * 30 + "THE END"], ["negative", "positive"], 11,
                              shots=[("great", 1), ("awful", 0)])
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[-1]["content"].split("\n\n", 1)[1].splitlines() == ["1. second line", "2. xxxxTHE END"]
    assert "exactly 2 labels" in msgs[-1]["content"] and "(0 = negative, 1 = positive)" in msgs[-1]["content"]
    assert msgs[1]["content"].endswith("\n\n1. great\n2. awful") and msgs[2] == {"role": "assistant", "content": "1,0"}


def test_shots_alternate_labels_and_are_seeded():
    texts, labels = [f"t{i}" for i in range(20)], [i % 3 == 0 for i in range(20)]
    shots = llm.pick_shots(texts, [int(x) for x in labels], 4, seed=1)
    assert [y for _, y in shots] == [1, 0, 1, 0] and shots == llm.pick_shots(texts, [int(x) for x in labels], 4, seed=1)
    with pytest.raises(EdgesentError, match="only 3 usable"):
        llm.pick_shots(texts[:3], [0, 1, 0], 5)


def test_no_endpoint_no_row_and_options_are_checked():
    target = Target(None, None, None)
    assert not [v for v in plan_variants(target, "cpu", has_train=True) if v.engine == "llm"]
    row = plan_variants(target, "cpu", has_train=False, llm={"model": "m", "shots": 2})[-1]
    assert row.engine == "llm" and "--llm-shots needs --data with a train split" in row.skip
    for values, message in [
        ({"llm_model": "gpt"}, "--llm-model: needs --llm-endpoint"),
        ({"llm_endpoint": "http://127.0.0.1:1/v1"}, "--llm-model: required with --llm-endpoint"),
        ({"llm_endpoint": "ftp://x", "llm_model": "m"}, "--llm-endpoint: expected an http(s) URL"),
        ({"llm_endpoint": "https://u:sk-1@h/v1", "llm_model": "m"}, "--llm-endpoint: no credentials in the URL"),
        ({"llm_price_per_mtok": "1"}, "--llm-price-per-mtok: expected two non-negative prices"),
        ({"llm_batch": 0}, "--llm-batch: must be at least 1"),
    ]:
        with pytest.raises(EdgesentError) as info:
            BenchOptions.parse(values)
        assert str(info.value).startswith(message), (values, str(info.value))
    assert BenchOptions.parse({"llm_endpoint": "http://h/v1", "llm_model": "m",
                               "llm_price_per_mtok": "0.15,0.6"}).llm_price_per_mtok == [0.15, 0.6]
