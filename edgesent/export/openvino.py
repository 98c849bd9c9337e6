"""OpenVINO INT8 (`edgesent export --openvino`): NNCF post-training static quantization of the fp32 ONNX file.

OpenVINO reads the exported fp32 ONNX graph (`Core.read_model`); NNCF's `quantize` inserts
FakeQuantize ops with per-channel symmetric weights and activation ranges calibrated on training
texts, using the settings NNCF's documentation gives for transformers (`model_type=TRANSFORMER`,
which keeps softmax/layer-norm paths in floating point, and the MIXED preset: symmetric weights,
asymmetric activations). The result is saved as an IR (`.xml` graph + `.bin` weights, file names
from `edgesent.artifact`) and is then gated like every INT8 variant (`quantize.quantize_with_gate`
walks `quantize.OPENVINO_VARIANTS`).

Calibration feeds one text per inference (no padding), so activation ranges are those of real
tokens. NNCF's progress bars and logs stay quiet unless `--debug` (EDGESENT_DEBUG) is set.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgesent.artifact import ir_weights
from edgesent.errors import GateError
from edgesent.openvino_session import OpenVinoSession, core, import_openvino
from edgesent.session import feed_for


@contextlib.contextmanager
def _quiet():
    """NNCF's logs and progress bars, hidden unless --debug."""
    if os.environ.get("EDGESENT_DEBUG"):
        yield
        return
    import nncf

    nncf.set_log_level(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def quantize_openvino_int8(fp32: Path, out: Path, *, texts: list[str], preprocessor, fast_bias_correction: bool = True,
                           ) -> dict[str, Any]:
    """Write the NNCF static INT8 IR of `fp32` to `out` (.xml, with its .bin); returns the attempt record."""
    ov = import_openvino()
    try:
        import nncf
    except ImportError:
        from edgesent.openvino_session import EXTRA

        raise GateError(f"OpenVINO INT8 needs nncf, which is not installed: {EXTRA}") from None
    if not texts:
        raise GateError("OpenVINO INT8 needs calibration texts (training data) but none were found")
    model = core().read_model(str(fp32))
    i32 = ov.Type.i32
    inputs = {p.get_any_name(): (np.int32 if p.get_element_type() == i32 else np.int64) for p in model.inputs}
    feeds = [feed_for(preprocessor.pad([ids]), inputs) for ids in preprocessor.encode(list(texts))]
    with _quiet():
        quantized = nncf.quantize(model, nncf.Dataset(feeds), preset=nncf.QuantizationPreset.MIXED,
                                  model_type=nncf.ModelType.TRANSFORMER, subset_size=len(feeds),
                                  fast_bias_correction=fast_bias_correction)
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return {"variant": "openvino_nncf_static", "format": "OpenVINO IR (FakeQuantize)", "engine": "openvino",
            "per_channel": True, "preset": "mixed", "model_type": "transformer", "calibration_texts": len(feeds),
            "nncf": nncf.__version__, "openvino": ov.__version__}


def openvino_predictions(path: Path, preprocessor, texts: list[str], batch_size: int = 32,
                         threads: int | None = None) -> np.ndarray:
    """Predicted label ids with OpenVINO, batching texts of similar length (what the runtime does)."""
    from edgesent.textproc import length_buckets

    sess = OpenVinoSession(path, threads=threads)
    ids = preprocessor.encode(texts)
    preds = np.zeros(len(texts), dtype=np.int64)
    for batch in length_buckets([len(x) for x in ids], batch_size):
        preds[batch] = sess.logits(preprocessor.pad([ids[i] for i in batch])).argmax(-1)
    return preds


def ir_bytes(xml: Path) -> int:
    """Size of an IR on disk: graph + weights."""
    return xml.stat().st_size + Path(xml).with_name(ir_weights(xml.name)).stat().st_size


def move_ir(src: Path, dst: Path) -> None:
    """Move an IR (.xml and its .bin) into place; the .bin first, so a present .xml means a complete pair."""
    os.replace(src.with_name(ir_weights(src.name)), dst.with_name(ir_weights(dst.name)))
    os.replace(src, dst)


def remove_ir(path: Path) -> None:
    path.with_name(ir_weights(path.name)).unlink(missing_ok=True)
    path.unlink(missing_ok=True)
