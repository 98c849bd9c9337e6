"""Every entry of edgesent/archs.py works end to end on a tiny model of its family.

For each architecture: the table's facts match the real module tree (blocks, head, LoRA targets,
depth and positions keys), and a tiny random model exports to ONNX, matches PyTorch within 1e-4,
quantizes to INT8, and `sensitive_nodes` finds exactly its head and last block in the graph.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgesent import archs
from edgesent.artifact import file_for, load_manifest
from edgesent.errors import ModelError

FAMILIES = sorted(archs.ARCHS)


@pytest.fixture(scope="module")
def tiny(model_factory):
    return model_factory  # conftest's cached tiny model per family



@pytest.mark.parametrize("family", FAMILIES)
def test_table_matches_the_module_tree(family, tiny):
    from edgesent.model import load_model_dir

    model = load_model_dir(tiny(family))
    arch = archs.arch_for(model.config)
    assert arch.family == family
    assert len(archs.blocks(model)) == arch.num_layers(model.config) == 2
    assert archs.head_modules(model) == list(arch.head)
    module_names = {name.split(".")[-1] for name, _ in model.named_modules()}
    assert set(arch.lora_targets) <= module_names, f"{family}: LoRA targets {arch.lora_targets} not in the model"
    assert arch.max_tokens(model.config) and arch.max_tokens(model.config) >= 500


@pytest.mark.parametrize("family", FAMILIES)
def test_export_parity_int8_and_sensitive_nodes(family, tiny, tmp_path):
    import onnx

    from edgesent.export import export, sensitive_nodes

    out = export(tiny(family), tmp_path / "artifact", int8=True)
    manifest = load_manifest(out)
    assert manifest["validation"]["max_abs_diff"] <= 1e-4
    assert manifest.models[file_for("int8")].precision == "int8"
    assert (out / file_for("int8")).stat().st_size < (out / file_for("fp32")).stat().st_size
    arch = archs.arch_for(family)
    fp32 = out / file_for("fp32")
    nodes = sensitive_nodes(fp32, family)
    all_nodes = [n.name for n in onnx.load(str(fp32), load_external_data=False).graph.node]
    blocks = {int(m.group(1)) for n in nodes for m in [arch.onnx_block.search(n)] if m}
    assert blocks == {1}, f"{family}: the kept block must be the last one, got {blocks}"
    assert any(n.startswith(arch.onnx_head) for n in nodes), f"{family}: no head node found"
    assert np.mean([n in nodes for n in all_nodes]) < 0.8


def test_unsupported_family_is_one_line():
    with pytest.raises(ModelError, match=r"model type 'whisper' is not supported by edgesent \(supported: bert, "):
        archs.arch_for("whisper")
