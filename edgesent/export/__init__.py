"""Merge, export, validate, quantize and package a trained classifier as an artifact folder.

`edgesent export [SOURCE] [--int8] [--static] [--fp16]` turns a run folder (or any Hugging Face
sequence classifier) into the self-contained folder described in `edgesent.artifact`. `export()`
below reads as the steps, each step living in one module of this package:

1. **Resolve** (`source`). Load the run, folder or hub id; LoRA runs are merged into their base
   weights (`merge_and_unload` on a deep copy), and the merged model must give the same logits as
   the adapter model (max abs diff <= 1e-4).
2. **Export** (`onnx_graph`). optimum-onnx writes fp32 ONNX with dynamic batch and sequence axes,
   from the in-memory model, so an edgesent MLP head is exported as it is.
3. **Validate** (`parity`). ONNX Runtime and PyTorch must agree (max abs diff <= 1e-4) on probe
   batches of mixed-length texts, right- and left-padded, tokenized by the same
   `textproc.Preprocessor` the runtime uses. optimum's own validation only uses random dummy ids
   of one shape, so we do our own.
4. **Quantize** (`quantize`, `--int8`). The INT8 variants of `quantize.INT8_VARIANTS` are tried in
   order until one passes the accuracy gate (at most `max_drop` points below fp32 on validation
   data); if none does, the artifact is written fp32-only and `GateError` is raised. `--static`
   asks for the static QDQ variant directly (still gated). `--openvino` also writes the OpenVINO
   engine's INT8 IR (`openvino`, NNCF static INT8), gated the same way on the same data
   (`quantize.OPENVINO_VARIANTS`); when it passes, the manifest's default engine becomes openvino.
5. **Package** (`package`). Everything is built under a temporary `.NAME.partial-PID` folder and
   moved into place when complete (`errors.atomic_dir`); the manifest, written last, hashes every file.

Why not onnxruntime's transformer optimizer (`onnxruntime.transformers.optimizer`)? Its fused
Attention/SkipLayerNorm ops are contrib ops whose fusions are architecture-specific (no GPT-NeoX
rotary fusion) and change numerics slightly, and quantizing fused graphs leaves fewer MatMuls to
quantize. ONNX Runtime already applies its portable graph optimizations at session creation, so
the artifact stays a plain, portable graph.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgesent.artifact import Manifest, ModelEntry, file_for, write_manifest
from edgesent.errors import EdgesentError, atomic_dir, check_writable
from edgesent.export.onnx_graph import convert_fp16, export_onnx, sensitive_nodes
from edgesent.export.package import (
    build_manifest,
    clear_stale_partials,
    default_out,
    model_card,
    print_summary,
)
from edgesent.export.parity import max_abs_diff, onnx_predictions, probe_batches, torch_logits, validate_onnx
from edgesent.export.quantize import (
    INT8_VARIANTS,
    OPENVINO_VARIANTS,
    Int8Variant,
    gate_data,
    quant_settings,
    quantize_with_gate,
)
from edgesent.export.source import Source, find_latest_run, make_preprocessor, merge_lora, resolve_source
from edgesent.options import ExportOptions

__all__ = [
    "INT8_VARIANTS", "OPENVINO_VARIANTS", "Int8Variant", "Source", "export", "export_onnx", "find_latest_run", "make_preprocessor",
    "max_abs_diff", "merge_lora", "onnx_predictions", "probe_batches", "quant_settings", "resolve_source",
    "sensitive_nodes", "torch_logits",
]


def _add_gated(models: dict[str, ModelEntry], key: str, gate) -> None:
    """Record a gate's fp32 accuracy on the fp32 entry and, when a variant passed, its file's entry."""
    if gate.record["fp32_accuracy"] is not None:
        models[file_for("fp32")].metrics["accuracy"] = gate.record["fp32_accuracy"]
    if gate.kept is not None:
        models[file_for(key)] = gate.model_entry()


def export(source: str | os.PathLike | None = None, out: str | os.PathLike | None = None, **options) -> Path:
    """Export SOURCE to an artifact folder and return its path (see the module docstring).

    `options` are the fields of `edgesent.options.ExportOptions` (int8, fp16, static, openvino, calibration,
    max_drop, eval_data, eval_limit, overwrite), validated there before any work starts.
    """
    opts = ExportOptions.parse(options, source=source, out=out)
    int8 = opts.int8 or opts.static
    from edgesent.quiet import quiet_libraries

    quiet_libraries()
    if opts.openvino:
        from edgesent.openvino_session import import_openvino

        import_openvino()  # without the extra: one line naming it, before any work
    src = resolve_source(opts.source, random_head_ok=opts.random_head_ok, overrides=opts.set)
    final = (opts.out.expanduser() if opts.out is not None else default_out(src)).resolve()
    if final.exists() and not opts.overwrite:
        raise EdgesentError(f"{final} already exists (pass --overwrite or choose another --out)")
    check_writable(final.parent)
    clear_stale_partials(final)
    evalset, calib = (gate_data(src, opts.eval_data, opts.eval_limit, opts.calibration,
                                need_calibration=opts.static or opts.openvino)
                      if int8 or opts.openvino else (None, []))

    gate = ov_gate = None
    with atomic_dir(final, overwrite=opts.overwrite) as tmp:
        fp32 = tmp / file_for("fp32")
        input_names = export_onnx(src.model, fp32)
        diff = validate_onnx(src.model, fp32, src.preprocessor)
        models = {file_for("fp32"): ModelEntry(precision="fp32", max_abs_diff=diff)}
        if int8:
            gate = quantize_with_gate(fp32, tmp / file_for("int8"), src, evalset, calib, static=opts.static,
                                      max_drop=opts.max_drop)
            _add_gated(models, "int8", gate)
        if opts.openvino:
            ov_gate = quantize_with_gate(fp32, tmp / file_for("openvino-int8"), src, evalset, calib, static=True,
                                         max_drop=opts.max_drop, table=OPENVINO_VARIANTS,
                                         fp32_preds=gate.fp32_preds if gate else None)
            _add_gated(models, "openvino-int8", ov_gate)
        if opts.fp16:
            models[file_for("fp16")] = convert_fp16(fp32, tmp / file_for("fp16"), src.model, src.preprocessor)
        src.tokenizer.save_pretrained(tmp)
        src.model.config.save_pretrained(tmp)
        manifest = build_manifest(src, input_names, diff, models, gate.record if gate else None)
        if ov_gate is not None:  # its gate record, and the default engine once its INT8 passed
            manifest = Manifest.model_validate({**manifest.to_json(), "openvino_quantization": ov_gate.record,
                                                "engine": "openvino" if ov_gate.kept else "onnxruntime"})
        (tmp / "README.md").write_text(model_card(src, manifest, tmp, final.name), encoding="utf-8")
        write_manifest(tmp, manifest)
    print_summary(final, manifest)
    if ov_gate is not None and ov_gate.record["attempts"]:
        a = ov_gate.record["attempts"][-1]
        drop = "-" if a["drop_points"] is None else f"{a['drop_points']:.2f} pts"
        print(f"OpenVINO INT8 ({a['variant']}, {a['calibration_texts']} calibration texts): drop {drop}  "
              f"{'PASS: default engine openvino' if a['passed'] else 'fail'}")
    for g in (gate, ov_gate):
        if g is not None and g.error is not None:
            raise g.error
    return final

