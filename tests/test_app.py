"""The Gradio app answers concurrent API clients correctly, stays on loopback and works in a real browser."""

from __future__ import annotations

import re
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from test_runtime import CLEAR, CLEAR_LABELS, build_artifact, train_tiny

from edgesent.app import build_app, launch_app, parse_auth
from edgesent.errors import EdgesentError


@pytest.fixture(scope="module")
def artifact(model_factory, sentiment_data, tmp_path_factory) -> Path:
    model = train_tiny(model_factory("bert"), tmp_path_factory.mktemp("app-model"))
    return build_artifact(model, tmp_path_factory.mktemp("app-art") / "bert", int8=True, eval_data=sentiment_data)


@pytest.fixture(scope="module")
def served(artifact):
    demo = build_app(artifact, max_chars=300)
    url = launch_app(demo, prevent_thread_lock=True)
    yield demo, url
    demo.close()


def outward_ip() -> str | None:
    """This machine's non-loopback address, if it has one (a UDP connect sends no packet)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.255.255.255", 1))
            ip = sock.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def test_binds_loopback_only_and_never_shares(served):
    demo, url = served
    assert demo.server_name == "127.0.0.1" and url.startswith("http://127.0.0.1:")
    assert demo.share is False and demo.share_url is None
    port = demo.server_port
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    ip = outward_ip()
    if ip:
        with pytest.raises(OSError), socket.create_connection((ip, port), timeout=2):
            pass


def test_twenty_concurrent_clients(served):
    from gradio_client import Client

    _, url = served
    client = Client(url, verbose=False)
    texts = (CLEAR * 4)[:20]
    expected = (CLEAR_LABELS * 4)[:20]

    def ask(text):
        return client.predict(text, api_name="/predict")

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(ask, texts))
    assert len(answers) == 20
    for (label, info), want in zip(answers, expected, strict=True):
        assert label["label"] == want
        assert {c["label"] for c in label["confidences"]} == {"negative", "positive"}
        assert re.search(rf"\*\*{want}\*\* \(\d+\.\d%\) in \d+\.\d ms", info)


def test_long_input_is_capped_with_note_and_empty_flagged(served):
    from gradio_client import Client

    client = Client(served[1], verbose=False)
    label, info = client.predict("great wonderful film " * 100, api_name="/predict")
    assert label["label"] == "positive" and "input cut to its first 300 characters" in info
    _, info = client.predict("", api_name="/predict")
    assert "empty input" in info


def test_batch_endpoint_scores_csv(served, tmp_path):
    import pandas as pd
    from gradio_client import Client, handle_file

    src = tmp_path / "reviews.csv"
    pd.DataFrame({"review": CLEAR, "id": range(len(CLEAR))}).to_csv(src, index=False)
    client = Client(served[1], verbose=False)
    out = client.predict(handle_file(str(src)), "review", api_name="/predict_file")
    df = pd.read_csv(out)
    assert df["label"].tolist() == CLEAR_LABELS and list(df.columns[:2]) == ["review", "id"]
    with pytest.raises(Exception, match=r"has no column 'text' \(columns: review, id\)"):
        client.predict(handle_file(str(src)), "text", api_name="/predict_file")


def test_auth_required_when_set(artifact):
    from gradio_client import Client

    demo = build_app(artifact)
    url = launch_app(demo, auth="ann:s3cret", prevent_thread_lock=True)
    try:
        with pytest.raises(Exception):  # noqa: B017 -- gradio_client raises a plain error on 401
            Client(url, verbose=False)
        label, _ = Client(url, auth=("ann", "s3cret"), verbose=False).predict("awful boring", api_name="/predict")
        assert label["label"] == "negative"
    finally:
        demo.close()


def test_facts_panel_and_auth_parsing(served):
    demo, _ = served
    facts = [b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "facts"][0].value
    clf = demo.edgesent_classifier
    accuracy = clf.manifest["models"]["model.int8.onnx"]["metrics"]["accuracy"]
    assert "| Served file | `model.int8.onnx` (0.1 MB) |" in facts and "| Labels | negative, positive |" in facts
    assert f"| Validation accuracy | {accuracy:.4f} |" in facts and "| Precision | int8 |" in facts
    assert f"| Max length | {clf.preprocessor.max_length} tokens (head truncation) |" in facts
    assert "| Quantization | variant=dynamic" in facts
    assert parse_auth("a:b:c") == ("a", "b:c") and parse_auth(None) is None
    with pytest.raises(EdgesentError, match="user:password"):
        parse_auth("nopassword")


@pytest.mark.browser
def test_browser_round_trip(served, tmp_path):
    from playwright.sync_api import sync_playwright

    _, url = served
    shot = tmp_path / "app.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.goto(url, wait_until="domcontentloaded")
            page.locator("#review textarea").fill("What a wonderful, brilliant and superb film. Loved it.")
            page.locator("#classify").click()
            page.locator("#timing").get_by_text(re.compile(r" ms with ")).wait_for(timeout=20_000)
            timing = page.locator("#timing").inner_text()
            top = page.locator('#sentiment [data-testid="label-output-value"]').inner_text()
            bars = page.locator("#sentiment").inner_text()
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    match = re.search(r"(positive|negative) \((\d+\.\d)%\)", timing)
    assert match and match.group(1) == "positive" and float(match.group(2)) > 50
    assert top.strip() == "positive"  # the Label's headline class
    shown = dict(re.findall(r"(positive|negative)\n(\d+)%", bars))  # confidence bars, rounded to whole %
    assert abs(int(shown["positive"]) - float(match.group(2))) <= 1 and set(shown) == {"positive", "negative"}
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
