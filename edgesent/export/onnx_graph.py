"""Write and inspect ONNX graphs: the fp32 export (optimum), the fp16 conversion, the nodes INT8 should spare.

optimum-onnx's exporter writes fp32 ONNX with dynamic batch and sequence axes (it carries the
patches that make GPT-NeoX/GPT-2 traceable). We export the in-memory model, so an edgesent MLP head
(`model.attach_head`) is exported as it is.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from edgesent.archs import arch_for
from edgesent.artifact import ModelEntry
from edgesent.errors import GateError, ModelError, first_line
from edgesent.export.parity import onnx_session, probe_diffs

FP16_PROB_ATOL = 1e-2  # fp16 keeps ~3 significant digits: compare probabilities, whose scale is fixed
OPTIMUM_OUTPUT = "model.onnx"  # the one file optimum's exporter writes for a small encoder (not an artifact name)


def export_onnx(torch_model, out_file: Path) -> list[str]:
    """fp32 ONNX with dynamic batch/sequence axes via optimum-onnx; returns the graph's input names."""
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
                             f"{first_line(exc)}") from None
        finally:
            torch_model.config._name_or_path = name_or_path
            logging.getLogger("optimum").setLevel(level)
        onnx_files = sorted(Path(scratch).glob("*.onnx"))
        if [p.name for p in onnx_files] != [OPTIMUM_OUTPUT] or any(Path(scratch).glob("*.onnx_data")):
            raise ModelError(f"the ONNX export of {model_type} produced {[p.name for p in onnx_files]}, "
                             f"expected one {OPTIMUM_OUTPUT}")
        shutil.move(str(onnx_files[0]), out_file)
    graph = onnx.load(str(out_file), load_external_data=False).graph
    return [i.name for i in graph.input]


def convert_fp16(fp32: Path, out: Path, torch_model, preprocessor) -> ModelEntry:
    """fp16 weights with fp32 inputs/outputs (for GPU providers); validated loosely on CPU if it runs.

    Logit errors of fp16 grow with the logits' magnitude (about 1% of it after a few layers), so the
    check is on class probabilities (max abs diff <= 1e-2); the logit difference is recorded too.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    onnx.save(convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True), str(out))
    entry = ModelEntry(precision="fp16")
    try:
        sess = onnx_session(out)
    except Exception as exc:  # noqa: BLE001 - CPU provider may lack fp16 kernels; fp16 targets GPUs
        entry.validation = f"not run on CPU: {first_line(exc, 200)}"
        return entry
    logit_diff, prob_diff = probe_diffs(torch_model, sess, preprocessor)
    if not prob_diff <= FP16_PROB_ATOL:
        raise GateError(f"fp16 ONNX probabilities differ from PyTorch by {prob_diff:.2e} (> {FP16_PROB_ATOL:g}) "
                        "on the probe batch")
    entry.max_abs_diff, entry.max_prob_diff = logit_diff, prob_diff
    entry.validation = "CPU, probe batch (probabilities)"
    return entry


def sensitive_nodes(onnx_path: Path, config_or_type) -> list[str]:
    """Names of the nodes of the classification head and the last transformer block.

    torch.onnx names nodes after their module path (`/bert/encoder/layer.1/attention/...`,
    `/gpt_neox/layers.5/...`, `/transformer/h.11/...`, `/classifier/Gemm`); the architecture's entry
    in `edgesent.archs` (from a transformers config or its model_type) says which paths those are.
    """
    import onnx

    arch = arch_for(config_or_type)
    names = [n.name for n in onnx.load(str(onnx_path), load_external_data=False).graph.node]
    block_of = {name: int(m.group(1)) for name in names for m in [arch.onnx_block.search(name)] if m}
    last = max(block_of.values(), default=None)
    return [name for name in names if name.startswith(arch.onnx_head) or block_of.get(name, -1) == last]
