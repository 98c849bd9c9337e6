"""INT8 quantization: the table of variants, how each is written, and the accuracy gate that picks one.

Dynamic INT8 (weights QInt8, activations quantized at run time) covers MatMul, Gemm *and Gather*:
the embedding table is most of a small model's bytes (Pythia-14M: 6.4M of 7.6M parameters are the
50304x128 embedding), so leaving Gather in fp32 would keep the file near half its fp32 size. Weights
get one scale per output channel (per-channel): on the real MiniLM IMDB model, per-tensor weights
lost 0.30 points on the 25,000 test reviews and disagreed with fp32 on 443 of them, per-channel
gained 0.06 and disagreed on 177, for +7 % latency at batch 1 x 128 and +0.1 MB
(`bench/int8_variants.py`, bench/RESULTS.md section 2).

`INT8_VARIANTS` is the one list of variants; `bench/int8_variants.py` scores all of them. The gate
(`quantize_with_gate`) compares INT8 with fp32 predictions on validation data, text by text, and walks
the variants marked `gate`, in order, until one passes (`judge`: agreement with fp32, accuracy drop
within `max_drop`, or a drop the paired McNemar test cannot tell from noise): per-channel, then
per-channel with the head and last block kept in fp32, then static QDQ calibrated on training texts.
If none passes, no INT8 file is kept and the caller raises the returned `GateError`. `--static`
walks only the static variants (still gated). The manifest records, per attempt, the paired counts
and p-value, and for the gate the smallest difference its n texts can resolve.

`OPENVINO_VARIANTS` is the sibling table for the OpenVINO engine (`--openvino`): NNCF static INT8
written as an OpenVINO IR (`edgesent.export.openvino`). The same gate walks it, scoring candidates
with the engine they are written for (`Int8Variant.predictions`).
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgesent.artifact import ModelEntry
from edgesent.errors import DataError, GateError
from edgesent.export.onnx_graph import sensitive_nodes
from edgesent.export.parity import onnx_predictions
from edgesent.machine import cpu_flags
from edgesent.metrics import accuracy, mcnemar_p, paired_comparison
from edgesent.session import OnnxSession, feed_for

QUANT_OPS = ["MatMul", "Gemm", "Gather"]


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
    """Dynamic INT8 (QOperator) of QUANT_OPS, symmetric weights, nodes in `exclude` left in fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        fp32, out, op_types_to_quantize=list(QUANT_OPS), per_channel=per_channel, reduce_range=settings["reduce_range"],
        weight_type=QuantType.QInt8, nodes_to_exclude=exclude or [],
        extra_options={"MatMulConstBOnly": True, "WeightSymmetric": True},
    )


def quantize_static_int8(fp32: Path, out: Path, *, texts: list[str], preprocessor, settings: dict,
                         per_channel: bool = False) -> None:
    """Static QDQ INT8 with MinMax ranges calibrated on `texts` (batches of 8, right padding)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    if not texts:
        raise GateError("static INT8 needs calibration texts (training data) but none were found")
    inputs = OnnxSession(fp32).inputs
    ids = preprocessor.encode(texts)
    feeds = [feed_for(preprocessor.pad(ids[i:i + 8]), inputs) for i in range(0, len(ids), 8)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

    quantize_static(
        fp32, out, Reader(), quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANT_OPS),
        per_channel=per_channel, reduce_range=settings["reduce_range"], activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8, extra_options={"WeightSymmetric": True, "ActivationSymmetric": False},
    )


# --------------------------------------------------------------------------------------------
# The variants


@dataclass(frozen=True)
class Int8Variant:
    """One way to quantize the fp32 graph to INT8 (the record its attempt leaves in the manifest)."""

    name: str
    scheme: Literal["dynamic", "static"]  # activations quantized per batch, or calibrated ranges (QDQ)
    per_channel: bool  # one weight scale per output channel (else per tensor)
    keep_sensitive: bool = False  # leave the head and the last transformer block in fp32
    gate: bool = True  # tried by the export gate (in table order)
    engine: Literal["onnxruntime", "openvino"] = "onnxruntime"  # the engine that runs (and scores) the file

    def candidate(self, out: Path) -> Path:
        """Where the gate writes this variant before it passes (beside `out`, hidden)."""
        return out.with_name(".candidate" + out.name[out.name.index("."):])

    def write(self, fp32: Path, out: Path, *, settings: dict, config_or_type=None, preprocessor=None,
              calibration: list[str] = ()) -> dict[str, Any]:
        """Write this variant of `fp32` to `out`; returns its attempt record (without size or accuracy).

        `config_or_type` (the model's config or model_type) is needed by `keep_sensitive` variants,
        `preprocessor` and `calibration` texts by static ones.
        """
        if self.engine == "openvino":
            from edgesent.export.openvino import quantize_openvino_int8

            return quantize_openvino_int8(fp32, out, texts=list(calibration), preprocessor=preprocessor)
        if self.scheme == "static":
            quantize_static_int8(fp32, out, texts=list(calibration), preprocessor=preprocessor, settings=settings,
                                 per_channel=self.per_channel)
            return {"variant": self.name, "format": "QDQ", "per_channel": self.per_channel,
                    "calibration_texts": len(calibration)}
        exclude = sensitive_nodes(fp32, config_or_type) if self.keep_sensitive else None
        quantize_dynamic_int8(fp32, out, per_channel=self.per_channel, exclude=exclude, settings=settings)
        return {"variant": self.name, "format": "QOperator", "per_channel": self.per_channel,
                "excluded_nodes": len(exclude or [])}

    def predictions(self, path: Path, preprocessor, texts: list[str]) -> np.ndarray:
        """Label ids of `texts` from the file this variant wrote, run by its engine."""
        if self.engine == "openvino":
            import torch

            from edgesent.export.openvino import openvino_predictions

            return openvino_predictions(path, preprocessor, texts, threads=max(1, torch.get_num_threads()))
        return onnx_predictions(path, preprocessor, texts)

    def file_bytes(self, path: Path) -> int:
        if self.engine == "openvino":
            from edgesent.export.openvino import ir_bytes

            return ir_bytes(path)
        return path.stat().st_size

    def place(self, candidate: Path, out: Path) -> None:
        """Move a passing candidate into place (an IR is two files)."""
        if self.engine == "openvino":
            from edgesent.export.openvino import move_ir

            move_ir(candidate, out)
        else:
            os.replace(candidate, out)

    def discard(self, candidate: Path) -> None:
        if self.engine == "openvino":
            from edgesent.export.openvino import remove_ir

            remove_ir(candidate)
        else:
            candidate.unlink(missing_ok=True)


INT8_VARIANTS: tuple[Int8Variant, ...] = (
    Int8Variant("dynamic", "dynamic", per_channel=False, gate=False),  # per-tensor: bench's baseline only
    Int8Variant("dynamic_per_channel", "dynamic", per_channel=True),
    Int8Variant("dynamic_per_channel_keep_head_last_block", "dynamic", per_channel=True, keep_sensitive=True),
    Int8Variant("static_qdq", "static", per_channel=False),
)


# The OpenVINO engine's INT8 (`--openvino`), gated by the same gate (`quantize_with_gate(variants=...)`).
OPENVINO_VARIANTS: tuple[Int8Variant, ...] = (
    Int8Variant("openvino_nncf_static", "static", per_channel=True, engine="openvino"),
)


def gate_variants(static: bool = False, table: tuple[Int8Variant, ...] = INT8_VARIANTS) -> list[Int8Variant]:
    """The variants of `table` the gate tries, in order (only the static ones for `--static`)."""
    return [v for v in table if v.gate and (v.scheme == "static" or not static)]


# --------------------------------------------------------------------------------------------
# The accuracy gate
#
# Accuracy on n texts moves in steps of 1/n (one text of 32 is 3.1 points), so comparing two
# accuracies decides by noise on small evaluation sets. The gate uses paired evidence instead:
# each INT8 prediction is compared with fp32's on the same text. A variant passes when it
# disagrees with fp32 on at most `max_drop` points of the texts (then its accuracy cannot have
# dropped more), or when its accuracy drop is within `max_drop`; it fails only when the drop is
# larger AND an exact McNemar test says INT8 is worse than fp32 (p < GATE_ALPHA). A drop the data
# cannot tell from noise is reported as inconclusive and the variant is kept: the gate never falls
# back to a later variant (measured worse on the full IMDB test) on such evidence. With n texts the
# smallest difference the test can resolve is MIN_DISCORDANT / n (6 texts all one way: p = 0.031).

GATE_ALPHA = 0.05


def _min_discordant(alpha: float = GATE_ALPHA) -> int:
    """Fewest discordant texts, all in one direction, for an exact two-sided McNemar p < alpha."""
    k = 1
    while mcnemar_p(k, 0) >= alpha:
        k += 1
    return k


MIN_DISCORDANT = _min_discordant()


def resolution_points(n: int) -> float | None:
    """The smallest accuracy difference (points) a paired test on n texts can tell from noise."""
    return round(100 * MIN_DISCORDANT / n, 4) if n else None


def judge(fp32_preds, preds, labels, max_drop: float) -> dict[str, Any]:
    """The gate's verdict on one variant: paired comparison with fp32, decision and the reason."""
    paired = paired_comparison(fp32_preds, preds, labels)
    drop = round(-paired["change_points"], 4) + 0.0  # no "-0.00"
    disagree = round(100 * (1 - paired["agreement"]), 4)
    if disagree <= max_drop:
        decision, passed = f"pass: disagrees with fp32 on {disagree:.2f} points of the texts", True
    elif drop <= max_drop:
        decision, passed = f"pass: drop {drop:.2f} points within {max_drop}", True
    elif paired["mcnemar_p"] >= GATE_ALPHA:
        decision, passed = (f"inconclusive, kept: drop {drop:.2f} points is not significant "
                            f"(McNemar p={paired['mcnemar_p']:.2f}, {paired['n']} texts)"), True
    else:
        decision, passed = f"fail: drop {drop:.2f} points, McNemar p={paired['mcnemar_p']:.2g}", False
    return {"accuracy": accuracy(preds, labels), "drop_points": drop, "agreement": paired["agreement"],
            "disagree_points": disagree, "only_fp32_right": paired["only_a_right"],
            "only_int8_right": paired["only_b_right"], "mcnemar_p": paired["mcnemar_p"], "decision": decision,
            "passed": passed}


def gate_data(src, eval_data: str | None, eval_limit: int | None, calibration: int,
              need_calibration: bool) -> tuple[Any, list[str]]:
    """(evaluation set for the accuracy gate, calibration texts) for this source.

    Evaluation: `eval_data`'s validation split (else its test split), or the run's validation split.
    Calibration: a seeded sample of the run's training texts (a plain HF folder has none: its
    evaluation texts are used instead). Static INT8 without any texts is refused here, before export.
    """
    from edgesent import data as D

    seed = src.recipe.seed if src.recipe is not None else 0
    cfg = src.recipe.data if src.recipe is not None else None
    columns = {"text_column": cfg.text_column if cfg else "text", "label_column": cfg.label_column if cfg else "label"}
    evalset, calib = None, []
    if eval_data is not None:
        try:
            try:
                split = D.load_split(eval_data, "validation", **columns, labels=src.labels, limit=eval_limit, seed=seed)
            except DataError as exc:
                if "has no" not in str(exc) or "no column" in str(exc):
                    raise
                split = D.load_split(eval_data, "test", **columns, labels=src.labels, limit=eval_limit, seed=seed)
        except DataError as exc:
            raise D.advice_for(exc, "--eval-data", f"{columns['text_column']}/{columns['label_column']}") from None
        evalset = split
    if src.recipe is not None and (evalset is None or need_calibration):
        splits = D.load_splits(src.recipe)
        if evalset is None:
            evalset = D.subset(splits["validation"], eval_limit, seed)
        calib = [str(t) for t in splits["train"].texts]
    if need_calibration and not calib and evalset is not None:
        calib = list(evalset.texts)
    if need_calibration and not calib:
        raise DataError(f"--static needs calibration texts, and {src.ref} is not a run folder with training data; "
                        "pass --eval-data PATH (its texts calibrate) or export a run folder")
    if len(calib) > calibration:
        rng = np.random.default_rng(seed)
        calib = [calib[i] for i in sorted(rng.choice(len(calib), size=calibration, replace=False))]
    return evalset, calib


@dataclass
class GateResult:
    """What the gate decided: the manifest's quantization record, the variant kept, the error if none."""

    record: dict[str, Any]
    kept: Int8Variant | None = None
    error: GateError | None = None
    fp32_preds: np.ndarray | None = None  # fp32's predictions on the evaluation set (reused by a second gate)

    def model_entry(self) -> ModelEntry | None:
        """The manifest entry of the INT8 file (None when no variant passed)."""
        if self.kept is None:
            return None
        acc = self.record["int8_accuracy"]
        return ModelEntry(precision="int8", scheme=self.kept.scheme, engine=self.kept.engine,
                          quantization=self.record["winner"], metrics={} if acc is None else {"accuracy": acc})


def quantize_with_gate(fp32: Path, out: Path, src, evalset, calib: list[str], *, static: bool,
                       max_drop: float, table: tuple[Int8Variant, ...] = INT8_VARIANTS,
                       fp32_preds: np.ndarray | None = None) -> GateResult:
    """Try the gate's INT8 variants of `table` until one passes (see `judge`); the winner is written to `out`.

    `fp32_preds` (the fp32 file's predictions on `evalset`) may be passed to skip scoring fp32 again.
    """
    settings = quant_settings()
    n = len(evalset.texts) if evalset else 0
    record: dict[str, Any] = {"settings": settings, "max_drop": max_drop, "attempts": [], "winner": None,
                              "fp32_accuracy": None, "int8_accuracy": None, "drop_points": None,
                              "eval_data": (evalset.origin or "validation") if evalset else None,
                              "eval_size": n, "alpha": GATE_ALPHA, "resolution_points": resolution_points(n)}
    if evalset is not None:
        if fp32_preds is None:
            fp32_preds = onnx_predictions(fp32, src.preprocessor, evalset.texts)
        record["fp32_accuracy"] = accuracy(fp32_preds, evalset.labels)
        record["gate"] = (f"paired with fp32 on {n} texts (exact McNemar, alpha {GATE_ALPHA}): resolves accuracy "
                          f"differences of {record['resolution_points']:.2f} points or more; a variant fails only "
                          f"when it drops more than {max_drop} points and significantly")
    else:
        record["gate"] = "skipped: no evaluation data (pass --eval-data to gate INT8 accuracy)"
    for variant in gate_variants(static, table):
        candidate = variant.candidate(out)
        attempt = variant.write(fp32, candidate, settings=settings, config_or_type=src.model.config,
                                preprocessor=src.preprocessor, calibration=calib)
        attempt["bytes"] = variant.file_bytes(candidate)
        if evalset is None:
            attempt.update(accuracy=None, drop_points=None, agreement=None, passed=True)
        else:
            preds = variant.predictions(candidate, src.preprocessor, evalset.texts)
            attempt.update(judge(fp32_preds, preds, evalset.labels, max_drop))
        record["attempts"].append(attempt)
        if attempt["passed"]:
            if attempt.get("decision", "").startswith("inconclusive"):
                print(f"note: {variant.name} dropped {attempt['drop_points']:.2f} points on {n} texts, within "
                      f"noise (this gate resolves {record['resolution_points']:.2f} points or more); kept it. Pass "
                      "--eval-data/--eval-limit with more texts for a sharper gate", file=sys.stderr)
            variant.place(candidate, out)
            record.update(winner=attempt, int8_accuracy=attempt["accuracy"], drop_points=attempt["drop_points"])
            return GateResult(record, kept=variant, fp32_preds=fp32_preds)
        variant.discard(candidate)
    tried = ", ".join(f"{a['variant']} {a['drop_points']:.2f} (p={a['mcnemar_p']:.2g})" for a in record["attempts"])
    what, wrote = (("INT8", "the fp32-only artifact") if table is INT8_VARIANTS else
                   ("OpenVINO INT8", "the artifact without the OpenVINO model"))
    return GateResult(record, fp32_preds=fp32_preds, error=GateError(
        f"{what} accuracy gate failed: every variant dropped more than {max_drop} points, significantly on {n} texts "
        f"(drops: {tried}); wrote {wrote}. Raise --max-drop or improve the model"
    ))
