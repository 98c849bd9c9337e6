"""`torchrun --nproc_per_node 2 -m edgesent train RECIPE` on CPU (gloo): the unchanged command trains
one model on two processes, each on its half of the data; rank 0 alone writes one run folder.

The tiny BERT has a 1000-token vocabulary and no dropout (test_train's builder), so a few seconds of
training separate the synthetic reviews. Each process gets one thread.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from conftest import tiny_recipe, write_sentiment_data
from test_train import build_model_dir

ROOT = Path(__file__).resolve().parents[1]


def test_two_process_training(tmp_path):
    model_dir = build_model_dir("bert", tmp_path / "model")
    data = write_sentiment_data(tmp_path / "data")  # 320 train / 80 validation / 120 test rows
    out_root = tmp_path / "exports"
    recipe = tiny_recipe(model_dir, data, out_root, training={"epochs": 8, "lr": 3e-3, "batch_size": 16})
    recipe_path = tmp_path / "tiny.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "edgesent", "train", str(recipe_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [p for p in out_root.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs  # rank 0 named it, rank 1 used the same name
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    # each rank saw half of the 320 training rows: 320 / (16 x 2) = 10 optimizer steps per epoch, not 20
    # (so 8 epochs here are the 80 steps a single process needs in 4 to learn this set)
    assert metrics["global_step"] == 8 * 10
    # metrics once, on the whole test split (gathered from both ranks, no padding duplicates)
    assert sum(map(sum, metrics["test"]["confusion_matrix"])) == 120
    assert metrics["test"]["accuracy"] >= 0.9, metrics["test"]
    assert proc.stdout.count("run folder:") == 1  # one summary, from rank 0
    assert (runs[0] / "model" / "model.safetensors").is_file() and (runs[0] / "recipe.yaml").is_file()
