"""Merge, export, validate, quantize and package a trained classifier as an artifact folder.

`edgesent export [SOURCE] [--int8] [--static] [--fp16]` turns a run folder (or any Hugging Face
sequence classifier) into the self-contained folder described in `edgesent.artifact`:

1. **Merge.** LoRA runs are merged into their base weights (`merge_and_unload` on a deep copy); the
   merged model must give the same logits as the adapter model (max abs diff <= 1e-4).
2. **Export.** optimum-onnx's exporter writes fp32 ONNX with dynamic batch and sequence axes (it
   carries the patches that make GPT-NeoX/GPT-2 traceable). We export the in-memory model, so an
   edgesent MLP head (`model.attach_head`) is exported as it is.
3. **Validate.** ONNX Runtime and PyTorch must agree (max abs diff <= 1e-4) on probe batches of
   mixed-length texts, right- and left-padded, tokenized by the same `textproc.Preprocessor` the
   runtime uses. optimum's own validation only uses random dummy ids of one shape, so we do our own.
4. **Quantize** (`--int8`). Dynamic INT8 (weights QInt8, activations quantized at run time) of
   MatMul, Gemm *and Gather*: the embedding table is most of a small model's bytes (Pythia-14M: 6.4M
   of 7.6M parameters are the 50304x128 embedding), so leaving Gather in fp32 would keep the file
   near half its fp32 size. Weights get one scale per output channel (per-channel) first: on the
   real MiniLM IMDB model, per-tensor weights lost 0.30 points on the 25,000 test reviews and
   disagreed with fp32 on 443 of them, per-channel gained 0.06 and disagreed on 177, for +7 %
   latency at batch 1 x 128 and +0.1 MB (`bench/int8_variants.py`, bench/RESULTS.md section 2).
   An accuracy gate compares fp32 and INT8 on validation data and, when the drop exceeds
   `max_drop` points, tries in order: per-channel with the head and last block kept in fp32, then
   static QDQ calibrated on training texts. The first variant that passes is kept; if none does,
   the artifact is written fp32-only and `GateError` is raised. `--static` asks for the static
   variant directly (still gated).
5. **Package.** Everything is built under a temporary `.NAME.partial-PID` folder and moved into
   place when complete (`errors.atomic_dir`); the manifest, written last, hashes every file.

Why not onnxruntime's transformer optimizer (`onnxruntime.transformers.optimizer`)? Its fused
Attention/SkipLayerNorm ops are contrib ops whose fusions are architecture-specific (no GPT-NeoX
rotary fusion) and change numerics slightly, and quantizing fused graphs leaves fewer MatMuls to
quantize. ONNX Runtime already applies its portable graph optimizations at session creation, so
the artifact stays a plain, portable graph.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
import json
import os
import platform
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgesent.errors import DataError, EdgesentError, GateError, ModelError, atomic_dir, check_writable

VALIDATE_ATOL = 1e-4
MERGE_ATOL = 1e-4
FP16_PROB_ATOL = 1e-2  # fp16 keeps ~3 significant digits: compare probabilities, whose scale is fixed
QUANT_OPS = ["MatMul", "Gemm", "Gather"]
HEAD_PATTERNS = ("/classifier", "/score", "/pre_classifier", "/head/")

# Probe texts for validation: different lengths (one long enough to be truncated) so that padding,
# masking and truncation are all exercised.
PROBE_TEXTS = [
    "great",
    "The film was dull and far too long; I nearly left halfway through.",
    "An absolutely wonderful, moving story with a brilliant cast.",
    " ".join(["the plot was really quite boring but the music was superb and the ending felt moving"] * 40),
    "worst",
    "It was fine?",
]


# --------------------------------------------------------------------------------------------
# What is being exported


@dataclass
class Source:
    """A loaded model ready to export, with everything the artifact needs to describe it."""

    kind: str  # "run", "folder" or "hub"
    ref: str  # the path or hub id as resolved
    model: Any  # torch sequence classifier, fp32, eval mode, LoRA already merged
    tokenizer: Any  # transformers fast tokenizer
    labels: list[str]
    preprocessor: Any  # textproc.Preprocessor
    pad_token: str | None
    method: str = "full"
    base_model: str = ""
    recipe: Any = None  # config.Recipe for runs
    run: Path | None = None
    merge_max_abs_diff: float | None = None
    notes: list[str] = field(default_factory=list)


def find_latest_run(root: str | os.PathLike = "exports") -> Path:
    """The most recently modified run folder (with model/ or adapter/) under `root`."""
    root = Path(root)
    if not root.is_dir():
        raise ModelError(f"no run folder given and {root}/ does not exist; train one with `edgesent train RECIPE`")
    candidates = [
        p.parent
        for pattern in ("*/recipe.yaml", "*/*/recipe.yaml")
        for p in root.glob(pattern)
        if not p.parent.name.startswith(".") and ((p.parent / "model").is_dir() or (p.parent / "adapter").is_dir())
    ]
    if not candidates:
        raise ModelError(f"no finished run folder (with model/ or adapter/) under {root}/; train one with `edgesent train`")
    return max(candidates, key=lambda p: p.stat().st_mtime)


def make_preprocessor(tokenizer, data_cfg):
    """The shared text->ids function for this tokenizer and data config (the one training used)."""
    from edgesent.data import make_preprocessor as data_make_preprocessor

    return data_make_preprocessor(tokenizer, data_cfg)


def resolve_source(source: str | os.PathLike | None) -> Source:
    """Load the model to export from a run folder, a HF folder or a hub id (None: newest run)."""
    from edgesent import model as M

    path = find_latest_run() if source is None else Path(source).expanduser()
    if path.is_dir() and (path / "recipe.yaml").is_file():
        return _load_run_source(path.resolve())
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is neither an edgesent run folder (recipe.yaml) nor a model folder (config.json)")
        ref, kind = str(path.resolve()), "folder"
    elif source is not None and not M.is_local(str(source)) and re.fullmatch(r"[\w.-]+(/[\w.-]+)?", str(source)):
        ref, kind = str(source), "hub"
    else:
        raise ModelError(f"export source not found: {source}")
    from edgesent.config import DataConfig

    torch_model = M.load_model_dir(ref)
    tokenizer = M.load_tokenizer(ref)
    if torch_model.config.pad_token_id is None:
        torch_model.config.pad_token_id = tokenizer.pad_token_id
    id2label = torch_model.config.id2label
    labels = [str(id2label[i]) for i in sorted(id2label)]
    max_length = min(DataConfig.model_fields["max_length"].default, int(tokenizer.model_max_length or 512))
    data_cfg = DataConfig(labels=labels, max_length=max_length)
    return Source(kind=kind, ref=ref, model=torch_model, tokenizer=tokenizer, labels=labels,
                  preprocessor=make_preprocessor(tokenizer, data_cfg), pad_token=tokenizer.pad_token,
                  base_model=ref, notes=[f"no recipe: preprocessing uses defaults (max_length {max_length}, head)"])


def _load_run_source(run: Path) -> Source:
    from edgesent import model as M

    torch_model, tokenizer, recipe = M.load_run(run, merge=False)
    labels_file = run / "adapter" / "edgesent_labels.json"
    labels = json.loads(labels_file.read_text()) if labels_file.is_file() else list(recipe.data.labels)
    pre = make_preprocessor(tokenizer, recipe.data)
    merge_diff = None
    if type(torch_model).__name__.startswith("Peft"):
        torch_model, merge_diff = merge_lora(torch_model, pre)
    return Source(kind="run", ref=str(run), model=torch_model, tokenizer=tokenizer, labels=[str(x) for x in labels],
                  preprocessor=pre, pad_token=tokenizer.pad_token, method=recipe.model.method,
                  base_model=recipe.model.name_or_path, recipe=recipe, run=run, merge_max_abs_diff=merge_diff)


def merge_lora(peft_model, preprocessor, atol: float = MERGE_ATOL):
    """Merge LoRA adapters into a deep copy; refuse if merged and adapter logits differ > atol."""
    peft_model.eval()
    merged = copy.deepcopy(peft_model).merge_and_unload()
    merged.eval()
    diff = 0.0
    for feed in probe_batches(preprocessor):
        diff = max(diff, float(np.abs(torch_logits(peft_model, feed) - torch_logits(merged, feed)).max()))
    if not diff <= atol:
        raise GateError(f"merged LoRA model differs from the adapter model by {diff:.2e} (> {atol:g}) on the probe batch")
    return merged, diff


# --------------------------------------------------------------------------------------------
# Running the model both ways


def probe_batches(preprocessor, texts: list[str] | None = None) -> list[dict[str, np.ndarray]]:
    """The probe texts tokenized by the runtime's preprocessor, right- and left-padded."""
    ids = preprocessor.encode(texts or PROBE_TEXTS)
    return [dataclasses.replace(preprocessor, padding_side=side).pad(ids) for side in ("right", "left")]


def with_token_types(feed: dict[str, np.ndarray], input_names) -> dict[str, np.ndarray]:
    """The feed restricted to the graph's inputs, with all-zero token_type_ids if it takes them."""
    feed = dict(feed)
    if "token_type_ids" in input_names and "token_type_ids" not in feed:
        feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
    return {k: v for k, v in feed.items() if k in input_names}


def torch_logits(torch_model, feed: dict[str, np.ndarray]) -> np.ndarray:
    """PyTorch logits for input_ids + attention_mask (token_type_ids default to zeros, as in the graph feed)."""
    import torch

    with torch.no_grad():
        out = torch_model(**{k: torch.from_numpy(feed[k]) for k in ("input_ids", "attention_mask")})
    return out.logits.float().numpy()


def session(path: str | os.PathLike):
    """An onnxruntime CPU session using the same thread budget as torch."""
    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def ort_logits(sess, feed: dict[str, np.ndarray]) -> np.ndarray:
    names = [i.name for i in sess.get_inputs()]
    return sess.run(None, with_token_types(feed, names))[0].astype(np.float32)


def max_abs_diff(torch_model, onnx_path: Path, preprocessor) -> float:
    sess = session(onnx_path)
    return max(float(np.abs(torch_logits(torch_model, f) - ort_logits(sess, f)).max()) for f in probe_batches(preprocessor))


# --------------------------------------------------------------------------------------------
# ONNX export


def export_onnx(torch_model, out_file: Path) -> list[str]:
    """fp32 ONNX with dynamic batch/sequence axes via optimum-onnx; returns the graph's input names."""
    import logging

    import onnx
    import torch
    from optimum.exporters.onnx import onnx_export_from_model

    torch_model = torch_model.to(torch.float32).eval()
    model_type = getattr(torch_model.config, "model_type", "?")
    with tempfile.TemporaryDirectory(prefix="edgesent-onnx-") as scratch:
        # optimum copies preprocessors from config._name_or_path (possibly a hub id): point it at the
        # empty scratch folder instead, so nothing is fetched; we save the tokenizer ourselves.
        name_or_path = torch_model.config._name_or_path
        torch_model.config._name_or_path = scratch
        level = logging.getLogger("optimum").level
        logging.getLogger("optimum").setLevel(logging.ERROR)
        try:
            onnx_export_from_model(torch_model, Path(scratch), task="text-classification", do_validation=False)
        except (ValueError, KeyError, NotImplementedError) as exc:
            raise ModelError(f"cannot export {model_type} ({type(torch_model).__name__}) to ONNX: "
                             f"{str(exc).splitlines()[0][:300]}") from None
        finally:
            torch_model.config._name_or_path = name_or_path
            logging.getLogger("optimum").setLevel(level)
        onnx_files = sorted(Path(scratch).glob("*.onnx"))
        if [p.name for p in onnx_files] != ["model.onnx"] or any(Path(scratch).glob("*.onnx_data")):
            raise ModelError(f"the ONNX export of {model_type} produced {[p.name for p in onnx_files]}, expected one model.onnx")
        shutil.move(str(onnx_files[0]), out_file)
    graph = onnx.load(str(out_file), load_external_data=False).graph
    return [i.name for i in graph.input]


def sensitive_nodes(onnx_path: Path) -> list[str]:
    """Names of the nodes of the classification head and the last transformer block.

    torch.onnx names nodes after their module path (`/bert/encoder/layer.1/attention/...`,
    `/gpt_neox/layers.5/...`, `/transformer/h.11/...`, `/classifier/Gemm`), which is what we match.
    """
    import onnx

    names = [n.name for n in onnx.load(str(onnx_path), load_external_data=False).graph.node]
    block = re.compile(r"/(?:layers?|h|blocks?)\.(\d+)/")
    indices = [int(m.group(1)) for n in names for m in [block.search(n)] if m]
    last = max(indices) if indices else None
    keep = []
    for name in names:
        m = block.search(name)
        if any(p in name for p in HEAD_PATTERNS) or (m and int(m.group(1)) == last):
            keep.append(name)
    return keep


# --------------------------------------------------------------------------------------------
# Quantization


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def quant_settings() -> dict[str, Any]:
    """Dynamic INT8 settings for this CPU, with the reason recorded in the manifest.

    ONNX Runtime's x86 u8s8 integer kernels multiply uint8 activations by int8 weights with
    `vpmaddubsw`, whose int16 pair sums can saturate with full 8-bit weights; VNNI (`avx512_vnni`,
    `avx_vnni`) accumulates into int32 and cannot. So on x86 without VNNI we quantize weights to 7 bits
    (`reduce_range`), as ONNX Runtime's docs advise; with VNNI, and on ARM (whose int8 dot products
    do not saturate), the full range is kept. The choice follows the exporting CPU: export on (or like)
    the deployment CPU.
    """
    flags = cpu_flags()
    machine = platform.machine().lower()
    x86 = machine in ("x86_64", "amd64", "i386", "i686")
    vnni = bool(flags & {"avx512_vnni", "avx_vnni", "avx_vnni_int8"})
    reduce_range = x86 and not vnni
    reason = ("x86 CPU without VNNI: 7-bit weights avoid u8s8 saturation" if reduce_range else
              "VNNI present: full 8-bit weights" if x86 else f"{machine}: full 8-bit weights")
    return {"weight_type": "QInt8", "activation_type": "QUInt8", "op_types": list(QUANT_OPS),
            "reduce_range": reduce_range, "reason": reason, "cpu_vnni": vnni, "machine": machine}


def quantize_dynamic_int8(fp32: Path, out: Path, *, per_channel: bool, exclude: list[str] | None, settings: dict) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        fp32, out, op_types_to_quantize=list(QUANT_OPS), per_channel=per_channel, reduce_range=settings["reduce_range"],
        weight_type=QuantType.QInt8, nodes_to_exclude=exclude or [],
        extra_options={"MatMulConstBOnly": True, "WeightSymmetric": True},
    )


def quantize_static_int8(fp32: Path, out: Path, *, texts: list[str], preprocessor, input_names: list[str],
                         settings: dict) -> None:
    """Static QDQ INT8 with MinMax ranges calibrated on `texts` (batches of 8, right padding)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if not texts:
        raise GateError("static INT8 needs calibration texts (training data) but none were found")
    ids = preprocessor.encode(texts)
    feeds = [with_token_types(preprocessor.pad(ids[i:i + 8]), input_names) for i in range(0, len(ids), 8)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

    quantize_static(
        fp32, out, Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANT_OPS), per_channel=False,
        reduce_range=settings["reduce_range"], activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
    )


# --------------------------------------------------------------------------------------------
# Evaluation data for the gate


def gate_data(src: Source, eval_data: str | None, eval_limit: int | None, calibration: int,
              need_calibration: bool) -> tuple[Any, list[str]]:
    """(evaluation set for the accuracy gate, calibration texts) for this source.

    Evaluation: `eval_data`'s validation split (else its test split), or the run's validation split.
    Calibration: a seeded sample of the run's training texts (a plain HF folder has none: its
    evaluation texts are used instead).
    """
    from edgesent import data as D

    seed = src.recipe.seed if src.recipe is not None else 0
    cfg = src.recipe.data if src.recipe is not None else None
    columns = {"text_column": cfg.text_column if cfg else "text", "label_column": cfg.label_column if cfg else "label"}
    evalset, calib = None, []
    if eval_data is not None:
        try:
            split = D.load_split(eval_data, "validation", **columns, labels=src.labels, limit=eval_limit, seed=seed)
        except DataError as exc:
            if "has no" not in str(exc):
                raise
            split = D.load_split(eval_data, "test", **columns, labels=src.labels, limit=eval_limit, seed=seed)
        evalset = split
    if src.recipe is not None and (evalset is None or need_calibration):
        splits = D.load_splits(src.recipe)
        if evalset is None:
            evalset = D.subset(splits["validation"], eval_limit, seed)
        calib = [str(t) for t in splits["train"].texts]
    if need_calibration and not calib and evalset is not None:
        calib = list(evalset.texts)
    if len(calib) > calibration:
        rng = np.random.default_rng(seed)
        calib = [calib[i] for i in sorted(rng.choice(len(calib), size=calibration, replace=False))]
    return evalset, calib


def onnx_predictions(onnx_path: Path, preprocessor, texts: list[str], batch_size: int = 32) -> np.ndarray:
    """Predicted label ids, batching texts of similar length (what the runtime does)."""
    from edgesent.textproc import length_buckets

    sess = session(onnx_path)
    ids = preprocessor.encode(texts)
    preds = np.zeros(len(texts), dtype=np.int64)
    for batch in length_buckets([len(x) for x in ids], batch_size):
        preds[batch] = ort_logits(sess, preprocessor.pad([ids[i] for i in batch])).argmax(-1)
    return preds


def accuracy(preds: np.ndarray, labels: list[int]) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(labels, preds))


# --------------------------------------------------------------------------------------------
# The artifact


def default_out(src: Source) -> Path:
    if src.run is not None:
        return src.run / "artifact"
    return Path("exports") / f"{Path(src.ref).name or src.ref.replace('/', '-')}-artifact"


def clear_stale_partials(final: Path) -> list[Path]:
    """Remove `.NAME.partial-PID` folders left by killed exports (whose process is gone)."""
    removed = []
    for tmp in final.parent.glob(f".{final.name}.partial-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        alive = False
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
                alive = True
            except ProcessLookupError:
                alive = False
            except PermissionError:
                alive = True
        if not alive:
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("edgesent", "torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime", "peft", "tokenizers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _size(path: Path) -> str:
    n = path.stat().st_size
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def model_card(src: Source, manifest: dict, folder: Path, name: str) -> str:
    """README.md in the Hugging Face model-card layout (YAML front matter, then prose and tables).

    `folder` holds the files (the temporary build folder), `name` is the artifact's final name.
    """
    import yaml

    q = manifest.get("quantization") or {}
    recipe = src.recipe
    dataset = recipe.data.dataset if recipe is not None else None
    front = {
        "library_name": "onnxruntime",
        "pipeline_tag": "text-classification",
        "tags": ["onnx", "sentiment-analysis", "edgesent"] + (["int8"] if "model.int8.onnx" in manifest["models"] else []),
        "base_model": src.base_model,
        "datasets": [dataset] if dataset else [],
        "metrics": ["accuracy"],
    }
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {recipe.name if recipe is not None else Path(src.ref).name} (edgesent artifact)", "",
             f"A {len(src.labels)}-class text classifier ({', '.join(src.labels)}) fine-tuned from `{src.base_model}` "
             f"(method: {src.method}) and exported to ONNX by edgesent. Serve it without torch with "
             f"`edgesent predict {name} \"some text\"` or `edgesent demo {name}`.", "",
             "## Data", ""]
    if recipe is not None:
        d = recipe.data
        lines += [f"Trained on `{d.dataset}` (text column `{d.text_column}`, label column `{d.label_column}`).",
                  f"Gate evaluated on: {q.get('eval_data', 'n/a')}.", ""]
    else:
        lines += [f"Exported from `{src.ref}`; the training data is not recorded.", ""]
    pre = manifest["preprocessing"]
    lines += ["## Preprocessing", "",
              f"max_length {pre['max_length']}, truncation `{pre['truncation']}` (head share {pre['head_share']}), "
              f"lowercase {pre['lowercase']}, padding {pre['padding_side']} with `{pre['pad_token']}`.", ""]
    if recipe is not None:
        lines += ["## Recipe", "", "```yaml", recipe.to_yaml().strip(), "```", ""]
    lines += ["## Files and metrics", "", "| file | precision | size | accuracy | notes |", "|---|---|---|---|---|"]
    for name, info in manifest["models"].items():
        acc = info.get("metrics", {}).get("accuracy")
        note = info.get("quantization", {}).get("variant", "") if info.get("quantization") else ""
        if "max_abs_diff" in info:
            note = (note + " " if note else "") + f"max abs diff vs PyTorch {info['max_abs_diff']:.1e}"
        lines.append(f"| {name} | {info['precision']} | {_size(folder / name)} | "
                     f"{'n/a' if acc is None else f'{acc:.4f}'} | {note} |")
    if q.get("drop_points") is not None:
        lines += ["", f"INT8 accuracy drop: {q['drop_points']:.2f} points (gate: at most {q['max_drop']} points)."]
    lines += ["", "## Intended use and limitations", "",
              "Sentiment classification of short English texts similar to the training data, on CPU or edge devices. "
              "Accuracy is only known on the data above; expect lower accuracy on other domains, languages, sarcasm "
              "and texts much longer than max_length (which are truncated). INT8 results can differ from fp32 on "
              "borderline inputs. Do not use it for decisions about people without human review.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The whole export


def export(source: str | os.PathLike | None = None, out: str | os.PathLike | None = None, *, int8: bool = False,
           fp16: bool = False, static: bool = False, calibration: int = 256, max_drop: float = 0.5,
           eval_data: str | None = None, eval_limit: int | None = None, overwrite: bool = False) -> Path:
    """Export SOURCE to an artifact folder and return its path (see the module docstring)."""
    from edgesent import __version__
    from edgesent.artifact import write_manifest

    if calibration <= 0:
        raise EdgesentError(f"--calibration must be positive, got {calibration}")
    if eval_limit is not None and eval_limit <= 0:
        raise EdgesentError(f"--eval-limit must be positive, got {eval_limit}")
    int8 = int8 or static
    src = resolve_source(source)
    final = (Path(out).expanduser() if out is not None else default_out(src)).resolve()
    if final.exists() and not overwrite:
        raise EdgesentError(f"{final} already exists (pass --overwrite or choose another --out)")
    check_writable(final.parent)
    clear_stale_partials(final)
    evalset, calib = gate_data(src, eval_data, eval_limit, calibration, need_calibration=static) if int8 else (None, [])

    gate_error: GateError | None = None
    with atomic_dir(final, overwrite=overwrite) as tmp:
        fp32 = tmp / "model.onnx"
        input_names = export_onnx(src.model, fp32)
        diff = max_abs_diff(src.model, fp32, src.preprocessor)
        if not diff <= VALIDATE_ATOL:
            raise GateError(f"ONNX and PyTorch logits differ by {diff:.2e} (> {VALIDATE_ATOL:g}) on the probe batch; "
                            "export refused")
        models: dict[str, dict] = {"model.onnx": {"precision": "fp32", "metrics": {}, "quantization": None,
                                                  "max_abs_diff": diff}}
        quant: dict[str, Any] | None = None
        if int8:
            quant, gate_error = quantize_with_gate(fp32, tmp / "model.int8.onnx", src, evalset, calib, input_names,
                                                   static=static, max_drop=max_drop)
            if quant.get("fp32_accuracy") is not None:
                models["model.onnx"]["metrics"]["accuracy"] = quant["fp32_accuracy"]
            if gate_error is None:
                models["model.int8.onnx"] = {"precision": "int8", "quantization": quant["winner"],
                                             "metrics": {} if quant["int8_accuracy"] is None
                                             else {"accuracy": quant["int8_accuracy"]}}
        if fp16:
            models["model.fp16.onnx"] = convert_fp16(fp32, tmp / "model.fp16.onnx", src)
        src.tokenizer.save_pretrained(tmp)
        src.model.config.save_pretrained(tmp)
        manifest = {
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "edgesent_version": __version__,
            "labels": src.labels,
            "preprocessing": src.preprocessor.to_manifest(src.pad_token),
            "inputs": input_names,
            "source": {"run": str(src.run) if src.run else None, "kind": src.kind, "ref": src.ref,
                       "recipe": src.recipe.model_dump(mode="json") if src.recipe is not None else None,
                       "base_model": src.base_model, "method": src.method,
                       "merge_max_abs_diff": src.merge_max_abs_diff},
            "validation": {"max_abs_diff": diff, "atol": VALIDATE_ATOL, "probe_texts": len(PROBE_TEXTS),
                           "padding": ["right", "left"]},
            "models": models,
            "quantization": quant,
            "versions": versions(),
            "notes": src.notes,
        }
        (tmp / "README.md").write_text(model_card(src, manifest, tmp, final.name), encoding="utf-8")
        write_manifest(tmp, manifest)
    print_summary(final, manifest)
    if gate_error is not None:
        raise gate_error
    return final


def quantize_with_gate(fp32: Path, out: Path, src: Source, evalset, calib: list[str],
                       input_names: list[str], *, static: bool, max_drop: float) -> tuple[dict, GateError | None]:
    """Try INT8 variants until one passes the accuracy gate; returns (record, error or None)."""
    settings = quant_settings()
    if static:
        variants = [("static_qdq", {"static": True})]
    else:
        variants = [("dynamic_per_channel", {"per_channel": True, "exclude": None}),
                    ("dynamic_per_channel_keep_head_last_block", {"per_channel": True, "exclude": sensitive_nodes(fp32)}),
                    ("static_qdq", {"static": True})]
    record: dict[str, Any] = {"settings": settings, "max_drop": max_drop, "attempts": [], "winner": None,
                              "fp32_accuracy": None, "int8_accuracy": None, "drop_points": None,
                              "eval_data": (evalset.origin or "validation") if evalset else None,
                              "eval_size": len(evalset.texts) if evalset else 0}
    fp32_preds = None
    if evalset is not None:
        fp32_preds = onnx_predictions(fp32, src.preprocessor, evalset.texts)
        record["fp32_accuracy"] = accuracy(fp32_preds, evalset.labels)
    else:
        record["gate"] = "skipped: no evaluation data (pass --eval-data to gate INT8 accuracy)"
    candidate = out.with_name(".candidate.int8.onnx")
    for name, opts in variants:
        if opts.get("static"):
            quantize_static_int8(fp32, candidate, texts=calib, preprocessor=src.preprocessor,
                                 input_names=input_names, settings=settings)
            attempt = {"variant": name, "format": "QDQ", "per_channel": False, "calibration_texts": len(calib)}
        else:
            quantize_dynamic_int8(fp32, candidate, per_channel=opts["per_channel"], exclude=opts["exclude"],
                                  settings=settings)
            attempt = {"variant": name, "format": "QOperator", "per_channel": opts["per_channel"],
                       "excluded_nodes": len(opts["exclude"] or [])}
        attempt["bytes"] = candidate.stat().st_size
        if evalset is None:
            attempt.update(accuracy=None, drop_points=None, agreement=None, passed=True)
        else:
            preds = onnx_predictions(candidate, src.preprocessor, evalset.texts)
            acc = accuracy(preds, evalset.labels)
            drop = round((record["fp32_accuracy"] - acc) * 100, 4)
            attempt.update(accuracy=acc, drop_points=drop, agreement=float((preds == fp32_preds).mean()),
                           passed=drop <= max_drop)
        record["attempts"].append(attempt)
        if attempt["passed"]:
            os.replace(candidate, out)
            record.update(winner=attempt, int8_accuracy=attempt["accuracy"], drop_points=attempt["drop_points"])
            return record, None
    candidate.unlink(missing_ok=True)
    tried = ", ".join(f"{a['variant']} {a['drop_points']:.2f}" for a in record["attempts"])
    return record, GateError(
        f"INT8 accuracy gate failed: every variant dropped more than {max_drop} points (drops: {tried}); "
        f"wrote the fp32-only artifact. Raise --max-drop or improve the model"
    )


def convert_fp16(fp32: Path, out: Path, src: Source) -> dict:
    """fp16 weights with fp32 inputs/outputs (for GPU providers); validated loosely on CPU if it runs.

    Logit errors of fp16 grow with the logits' magnitude (about 1% of it after a few layers), so the
    check is on class probabilities (max abs diff <= 1e-2); the logit difference is recorded too.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True), str(out))
    info: dict[str, Any] = {"precision": "fp16", "metrics": {}, "quantization": None}
    try:
        sess = session(out)
    except Exception as exc:  # noqa: BLE001 - CPU provider may lack fp16 kernels; fp16 targets GPUs
        info["validation"] = f"not run on CPU: {str(exc).splitlines()[0][:200]}"
        return info
    logit_diff = prob_diff = 0.0
    for feed in probe_batches(src.preprocessor):
        ref, got = torch_logits(src.model, feed), ort_logits(sess, feed)
        logit_diff = max(logit_diff, float(np.abs(ref - got).max()))
        prob_diff = max(prob_diff, float(np.abs(softmax(ref) - softmax(got)).max()))
    if not prob_diff <= FP16_PROB_ATOL:
        raise GateError(f"fp16 ONNX probabilities differ from PyTorch by {prob_diff:.2e} (> {FP16_PROB_ATOL:g}) "
                        "on the probe batch")
    info.update(max_abs_diff=logit_diff, max_prob_diff=prob_diff, validation="CPU, probe batch (probabilities)")
    return info


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def print_summary(folder: Path, manifest: dict) -> None:
    q = manifest.get("quantization") or {}
    print(f"artifact: {folder}")
    print(f"{'file':<18} {'precision':<9} {'size':>10} {'accuracy':>9}")
    for name, info in manifest["models"].items():
        acc = info.get("metrics", {}).get("accuracy")
        print(f"{name:<18} {info['precision']:<9} {_size(folder / name):>10} {'-' if acc is None else f'{acc:.4f}':>9}")
    print(f"ONNX vs PyTorch max abs diff: {manifest['validation']['max_abs_diff']:.2e}")
    if q:
        s = q["settings"]
        print(f"INT8 settings: {', '.join(s['op_types'])}, weights {s['weight_type']}, reduce_range {s['reduce_range']} "
              f"({s['reason']})")
        for a in q["attempts"]:
            drop = "-" if a["drop_points"] is None else f"{a['drop_points']:.2f} pts"
            print(f"  {a['variant']:<42} drop {drop:>10}  {'PASS' if a['passed'] else 'fail'}")
        if q.get("gate"):
            print(f"  gate {q['gate']}")
        if q.get("winner"):
            print(f"INT8 kept: {q['winner']['variant']} (fp32 {q['fp32_accuracy'] if q['fp32_accuracy'] is None else round(q['fp32_accuracy'], 4)}, "
                  f"int8 {q['int8_accuracy'] if q['int8_accuracy'] is None else round(q['int8_accuracy'], 4)})")


def export_cli(source, int8=False, fp16=False, static=False, calibration=256, max_drop=0.5, eval_data=None,
               eval_limit=None, out=None, overwrite=False) -> Path:
    return export(source, out, int8=int8, fp16=fp16, static=static, calibration=calibration, max_drop=max_drop,
                  eval_data=eval_data, eval_limit=eval_limit, overwrite=overwrite)
