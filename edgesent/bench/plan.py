"""What to benchmark: the target (artifact and/or run) and the variants that can, or cannot, run here.

- `resolve_target` turns the user's argument (an artifact folder, a run folder, or nothing: the
  newest artifact under exports/) into a `Target`: the artifact with its typed `Manifest` (the ONNX
  side) and the training run (the PyTorch side), each possibly absent with the reason why.
- `plan_variants` lists the variants for a device. ONNX variants come from the manifest's typed
  model entries (`ort-` + `ModelEntry.variant`: fp32, int8, int8-static, fp16); file names are
  never guessed. A variant that cannot run here carries its reason in `skip` and becomes a row
  of the report, never a crash. The OpenVINO rows read the same manifest (`openvino-fp32`/`-bf16` run
  the fp32 ONNX file, `openvino-int8` the IR of `export --openvino`); the CPU torch rows (bf16,
  bitsandbytes LLM.int8/nf4) are the CUDA rows' code on the CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from edgesent.artifact import (
    ENGINE_FILES,
    MANIFEST,
    Manifest,
    file_for,
    is_artifact,
    load_manifest,
    loaded_files,
)
from edgesent.errors import ModelError

CUDA_TORCH_PRECISIONS = ("fp32", "fp16", "bf16")
CUDA_BNB_PRECISIONS = ("llm-int8", "nf4")
CUDA_ORT_PRECISIONS = ("fp32", "fp16")
CPU_TORCH_VARIANTS = (("torch-bf16", "bf16"), ("torch-bnb-int8", "llm-int8"), ("torch-bnb-nf4", "nf4"))
OPENVINO_VARIANTS = (("openvino-fp32", "fp32"), ("openvino-bf16", "bf16"), ("openvino-int8", "int8"))


@dataclass
class Target:
    """The artifact (ONNX side) and the run (PyTorch side) found from the user's argument."""

    artifact: Path | None
    run: Path | None
    manifest: Manifest | None
    run_note: str = ""


@dataclass
class Variant:
    """One way of running the model; `skip` holds the reason when it cannot run here."""

    name: str
    device: str  # cpu | cuda | api
    engine: str  # a key of runners.RUNNERS: ort | openvino | torch | pipeline | sklearn | llm
    precision: str
    file: str | None = None
    skip: str | None = None
    options: dict | None = None  # engine settings passed to the worker (the LLM's; never a secret)


def newest_artifact(root: str | os.PathLike = "exports", precision: str | None = None) -> Path:
    """The artifact under `root` whose manifest was written last (holding the `precision` file, when given).

    Hidden folders (the `.partial` folders of interrupted exports) are left out.
    """
    root = Path(root)
    found = []
    for manifest in root.rglob(MANIFEST):
        folder = manifest.parent
        if any(part.startswith(".") for part in folder.relative_to(root).parts):
            continue
        if precision is None or (folder / file_for(precision)).is_file():
            found.append((manifest.stat().st_mtime, folder))
    if not found:
        what = f"artifact with {file_for(precision)}" if precision else "artifact"
        raise ModelError(f"no {what} found under {root}/; pass an artifact or run folder (export one with `edgesent export`)")
    return max(found)[1]


def resolve_target(target: str | os.PathLike | None) -> Target:
    """Artifact folder, run folder (its `artifact/` + checkpoint) or None (newest artifact under exports/)."""
    path = newest_artifact() if target is None else Path(target)
    if not path.exists():
        raise ModelError(f"bench target not found: {path}")
    if not path.is_dir():
        raise ModelError(f"bench target {path} is not a folder (expected an artifact or a run folder)")
    if is_artifact(path):
        manifest = load_manifest(path)
        source_run = (manifest.get("source") or {}).get("run")
        run, note = None, "the artifact names no training run (source.run)"
        if source_run:
            candidate = Path(source_run)
            if (candidate / "recipe.yaml").is_file():
                run, note = candidate, ""
            else:
                note = f"the artifact's training run {source_run} is not here"
        return Target(path, run, manifest, note)
    if (path / "recipe.yaml").is_file():
        artifact = path / "artifact"
        if is_artifact(artifact):
            return Target(artifact, path, load_manifest(artifact))
        return Target(None, path, None)
    raise ModelError(f"{path} is neither an edgesent artifact (no {MANIFEST}) nor a run folder (no recipe.yaml)")


def onnx_variants(manifest: Manifest | None) -> list[Variant]:
    """One onnxruntime CPU-side variant per model file of the manifest, named from its typed entry."""
    if manifest is None:
        return []
    out, seen = [], {}
    for name in manifest.model_files(engine="onnxruntime"):
        entry = manifest.entry(name)
        label = f"ort-{entry.variant}"
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:  # two files of one kind: keep the names apart
            label = f"{label}-{seen[label]}"
        out.append(Variant(label, "cpu", "ort", entry.precision, file=name))
    return out


def openvino_variants(target: Target) -> list[Variant]:
    """openvino-fp32 / -bf16 (the fp32 ONNX file under each precision hint) and openvino-int8 (the NNCF IR)."""
    from edgesent.openvino_session import EXTRA, available, bf16_skip_reason

    no_ov = None if available() else f"openvino not installed ({EXTRA})"
    no_artifact = None if target.artifact else "no artifact: run `edgesent export` on the run first"
    files = target.manifest.model_files() if target.manifest else []
    out = []
    for name, precision in OPENVINO_VARIANTS:
        file = file_for(ENGINE_FILES["openvino"][precision])
        missing = None if file in files else f"the artifact has no {file}" + (
            " (export with --openvino)" if precision == "int8" else "")
        skip = no_ov or no_artifact or missing or (bf16_skip_reason() if precision == "bf16" else None)
        out.append(Variant(name, "cpu", "openvino", precision, file=file, skip=skip))
    return out


def cpu_torch_variants(no_torch: str | None) -> list[Variant]:
    """PyTorch bf16 and bitsandbytes LLM.int8 / nf4 on the CPU (the CUDA rows' code, device cpu)."""
    import importlib.util

    from edgesent.machine import native_bf16

    no_bnb = None if importlib.util.find_spec("bitsandbytes") else "bitsandbytes not installed"
    no_bf16 = None if native_bf16() else "this CPU has no native bf16 (avx512_bf16 / amx_bf16): emulated, slow"
    return [Variant(name, "cpu", "torch", p, skip=no_torch or (no_bf16 if p == "bf16" else no_bnb))
            for name, p in CPU_TORCH_VARIANTS]


def plan_variants(target: Target, device: str, has_train: bool, has_data: bool = True,
                  llm: dict | None = None) -> list[Variant]:
    """The variants for `device` (cpu, cuda or all), with a skip reason for those that cannot run.

    `llm` (settings from `edgesent.bench.llm.settings_from`, i.e. --llm-endpoint was given) adds the
    LLM-API baseline on device "api", whatever `device` is; without it no such row and no network.
    """
    variants: list[Variant] = []
    no_torch = None if target.run else f"no PyTorch checkpoint: {target.run_note or 'no run folder'}"
    no_artifact = None if target.artifact else "no artifact: run `edgesent export` on the run first"
    onnx = onnx_variants(target.manifest)
    if device in ("cpu", "all"):
        variants.append(Variant("torch-fp32", "cpu", "torch", "fp32", skip=no_torch))
        variants += cpu_torch_variants(no_torch)
        variants += [v for v in onnx if v.precision != "fp16"]
        if not onnx:
            variants.append(Variant("ort-fp32", "cpu", "ort", "fp32", skip=no_artifact or "the artifact holds no ONNX model"))
        variants += openvino_variants(target)
        no_texts = None if has_data else "measures throughput on texts only: pass --data"
        variants.append(Variant("pipeline-fp32", "cpu", "pipeline", "fp32", skip=no_torch or no_texts))
        no_train = None if has_train else "needs --data with a train split other than the benchmarked one"
        variants.append(Variant("tfidf-logreg", "cpu", "sklearn", "fp64", skip=no_train))
    if device in ("cuda", "all"):
        variants.extend(_cuda_variants(target, no_torch))
    if llm:
        variants.append(llm_variant(llm, has_train, has_data))
    return variants


def llm_variant(llm: dict, has_train: bool, has_data: bool) -> Variant:
    """The LLM-API baseline row: `llm-<model>` (characters other than letters, digits, . _ - become -)."""
    import re

    skip = None
    if not has_data:
        skip = "the LLM baseline classifies texts: pass --data"
    elif llm.get("shots") and not has_train:
        skip = "--llm-shots needs --data with a train split other than the benchmarked one (examples never come from it)"
    name = "llm-" + re.sub(r"[^A-Za-z0-9._-]+", "-", llm["model"]).strip("-")
    return Variant(name, "api", "llm", "api", skip=skip, options=llm)


def _cuda_variants(target: Target, no_torch: str | None) -> list[Variant]:
    import importlib.util

    import onnxruntime as ort

    no_cuda = None if cuda_available() else "CUDA not available (torch.cuda.is_available() is False)"
    out = [Variant(f"torch-{p}-cuda", "cuda", "torch", p, skip=no_cuda or no_torch) for p in CUDA_TORCH_PRECISIONS]
    no_bnb = None if importlib.util.find_spec("bitsandbytes") else "bitsandbytes not installed"
    for p in CUDA_BNB_PRECISIONS:
        out.append(Variant(f"torch-bnb-{p}-cuda", "cuda", "torch", p, skip=no_cuda or no_torch or no_bnb))
    no_ort_gpu = None if "CUDAExecutionProvider" in ort.get_available_providers() else "onnxruntime-gpu not installed"
    files = target.manifest.model_files() if target.manifest else []
    for p in CUDA_ORT_PRECISIONS:
        name = file_for(p)
        missing = None if name in files else f"the artifact has no {name}" + (" (export with --fp16)" if p == "fp16" else "")
        out.append(Variant(f"ort-{p}-cuda", "cuda", "ort", p, file=name, skip=no_cuda or no_ort_gpu or missing))
    return out


def cuda_available() -> bool:
    """Asked in a subprocess so that the driver process does not import torch."""
    code = "import torch; print(int(torch.cuda.is_available()))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return proc.stdout.strip() == "1"


def file_bytes(target: Target, variant: Variant) -> int | None:
    """On-disk size of what the variant loads: its ONNX file, or the run's weights for PyTorch engines."""
    if variant.engine in ("ort", "openvino") and target.artifact is not None and variant.file:
        paths = [target.artifact / name for name in loaded_files(variant.file)]
        return sum(p.stat().st_size for p in paths) if all(p.is_file() for p in paths) else None
    if variant.engine in ("torch", "pipeline") and target.run is not None:
        folder = target.run / ("model" if (target.run / "model").is_dir() else "adapter")
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".bin"))
    return None


def check_seq_lens(target: Target, seq_lens: list[int]) -> None:
    """`--seq-lens` beyond the model's positions is one line before any measurement (not '-' cells)."""
    import json
    from types import SimpleNamespace

    from edgesent.archs import ARCHS

    for folder in (target.artifact, target.run and target.run / "model"):
        config = folder / "config.json" if folder else None
        if config is not None and config.is_file():
            data = json.loads(config.read_text(encoding="utf-8"))
            arch = ARCHS.get(str(data.get("model_type")))
            limit = arch.max_tokens(SimpleNamespace(**data)) if arch else None
            too_long = [n for n in seq_lens if limit is not None and n > limit]
            if too_long:
                raise ModelError(f"--seq-lens {','.join(map(str, too_long))} exceeds the {limit} positions of the model "
                                 f"in {folder}; use at most {limit}")
            return

