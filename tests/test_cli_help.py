"""The CLI map stays instant: no heavy library is imported to answer --help."""

import subprocess
import sys
import time

import pytest

COMMANDS = ["train", "export", "predict", "demo", "bench", "sweep"]


def test_cli_import_is_light():
    code = (
        "import sys, edgesent.cli\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'onnxruntime', 'gradio', 'optimum', 'pandas') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"edgesent.cli imports heavy modules at start-up: {out}"


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_is_fast(command):
    args = [sys.executable, "-m", "edgesent.cli"] + ([command] if command else []) + ["--help"]
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout
    assert elapsed < 2.0, f"{' '.join(args[2:])} took {elapsed:.2f}s"


def test_missing_recipe_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "edgesent.cli", "train", "no/such/recipe.yaml"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: recipe file not found: no/such/recipe.yaml"
