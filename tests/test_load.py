"""bench.load_test at small scale: 10 concurrent gradio_client clients x 5 requests, 0 errors.

The app is started in-process on 127.0.0.1 on a tiny exported model; every reply is checked to
carry the artifact's labels, latencies are measured per request, and the loopback/limit guards of
the script are checked too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench import load_test
from edgesent.bench.plan import newest_artifact

pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def artifact(model_factory, tmp_path_factory) -> Path:
    pytest.importorskip("edgesent.app")
    from edgesent.export import export

    return Path(export(str(model_factory("bert")), tmp_path_factory.mktemp("load") / "artifact", int8=True,
                       max_drop=100.0))


def test_small_load_has_no_errors(artifact, tmp_path):
    result = load_test.main(["--artifact", str(artifact), "--clients", "10", "--requests", "5", "--max-seconds", "240",
                             "--json", str(tmp_path / "load.json")])
    assert result.errors == 0, result.error_samples
    assert result.skipped == 0
    assert result.completed == 50
    assert 0 < result.p50_ms <= result.p99_ms <= result.max_ms
    assert result.throughput_rps > 0
    saved = json.loads((tmp_path / "load.json").read_text())
    assert saved["completed"] == 50 and saved["errors"] == 0


def test_wrong_endpoint_counts_errors(artifact):
    """A failing endpoint shows up as errors with messages, not as a crash or as silent success."""
    demo, url = load_test.start_app(artifact)
    try:
        result = load_test.run_load(url, clients=2, requests=2, api_name="/no_such_endpoint")
    finally:
        demo.close()
    assert result.completed == 0
    assert result.errors == 4
    assert result.error_samples


def test_default_artifact_is_newest_int8(tmp_path):
    older = tmp_path / "exports" / "a" / "artifact"
    newer = tmp_path / "exports" / "b" / "artifact"
    fp32_only = tmp_path / "exports" / "c" / "artifact"
    partial = tmp_path / "exports" / "d" / ".artifact.partial-123"
    for i, folder in enumerate([older, newer, fp32_only, partial]):
        folder.mkdir(parents=True)
        (folder / "model.onnx").write_bytes(b"x")
        if folder is not fp32_only:
            (folder / "model.int8.onnx").write_bytes(b"x")
        manifest = folder / "edgesent.json"
        manifest.write_text("{}")
        os.utime(manifest, (1000 + i, 1000 + i))
    assert newest_artifact(tmp_path / "exports", precision="int8") == newer


@pytest.mark.parametrize("url", ["http://10.0.0.1:7860", "https://example.com", "http://0.0.0.0:7860"])
def test_refuses_non_loopback_targets(url):
    with pytest.raises(SystemExit, match="not a loopback address"):
        load_test.run_load(url, clients=1, requests=1)


@pytest.mark.parametrize("clients,requests", [(0, 1), (load_test.MAX_CLIENTS + 1, 1), (1, load_test.MAX_REQUESTS + 1)])
def test_bounded_counts(clients, requests):
    with pytest.raises(SystemExit, match="must be between"):
        load_test.run_load("http://127.0.0.1:9", clients=clients, requests=requests)


def test_percentile_nearest_rank():
    values = list(range(1, 101))
    assert load_test.percentile(values, 50) == 50
    assert load_test.percentile(values, 99) == 99
    assert load_test.percentile(values, 100) == 100
    assert load_test.percentile([], 50) is None
