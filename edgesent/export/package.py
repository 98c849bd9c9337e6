"""Package the artifact folder: where it goes, its manifest, its model card and the summary printed after export.

The file names come from `edgesent.artifact.file_for`; the manifest is the typed
`edgesent.artifact.Manifest`, validated again when `write_manifest` hashes the folder.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
from pathlib import Path
from typing import Any

from edgesent.artifact import Manifest, ModelEntry, file_for
from edgesent.export.parity import PROBE_TEXTS, VALIDATE_ATOL
from edgesent.export.source import Source
from edgesent.machine import versions


def default_out(src: Source) -> Path:
    """`<run>/artifact` for a run, else `exports/<name>-artifact`."""
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


def build_manifest(src: Source, inputs: list[str], max_abs_diff: float, models: dict[str, ModelEntry],
                   quantization: dict[str, Any] | None) -> Manifest:
    """The manifest of the artifact (its `files` table is added by `write_manifest`)."""
    from edgesent import __version__

    return Manifest(
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        edgesent_version=__version__,
        labels=src.labels,
        preprocessing=src.preprocessor.to_manifest(src.pad_token),
        inputs=inputs,
        source={"run": str(src.run) if src.run else None, "kind": src.kind, "ref": src.ref,
                "recipe": src.recipe.model_dump(mode="json") if src.recipe is not None else None,
                "base_model": src.base_model, "method": src.method, "merge_max_abs_diff": src.merge_max_abs_diff,
                **lineage(src)},
        validation={"max_abs_diff": max_abs_diff, "atol": VALIDATE_ATOL, "probe_texts": len(PROBE_TEXTS),
                    "padding": ["right", "left"]},
        models=models,
        quantization=quantization,
        versions=versions(),
        notes=src.notes,
    )


def lineage(src: Source) -> dict[str, Any]:
    """The run's distillation teacher and settings and its kept layers (from its recipe), for manifest and card."""
    recipe = src.recipe
    if recipe is None or (recipe.distill is None and recipe.model.keep_layers is None):
        return {}
    d = recipe.distill
    return {"keep_layers": recipe.model.keep_layers,
            "distill": None if d is None else {"teacher": d.teacher, "temperature": d.temperature, "alpha": d.alpha}}


def _lineage_lines(src: Source) -> list[str]:
    info = lineage(src)
    if not info:
        return []
    lines = ["## Distillation", ""]
    if info["distill"]:
        d = info["distill"]
        lines.append(f"Distilled from the teacher `{d['teacher']}`: loss = {d['alpha']} x T^2 x KL(teacher || student) "
                     f"at temperature T = {d['temperature']} + {1 - d['alpha']:g} x cross-entropy on the gold labels.")
    if info["keep_layers"] is not None:
        lines.append(f"Student built from `{src.base_model}` keeping its transformer blocks {info['keep_layers']} "
                     "(embeddings and head copied).")
    return lines + [""]


def _size(path: Path) -> str:
    n = path.stat().st_size
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def model_card(src: Source, manifest: Manifest, folder: Path, name: str) -> str:
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
        "tags": ["onnx", "sentiment-analysis", "edgesent"] + (["int8"] if file_for("int8") in manifest["models"] else []),
        "base_model": src.base_model,
        "datasets": [dataset] if dataset else [],
        "metrics": ["accuracy"],
    }
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {recipe.name if recipe is not None else Path(src.ref).name} (edgesent artifact)", "",
             f"A {len(src.labels)}-class text classifier ({', '.join(src.labels)}) fine-tuned from `{src.base_model}` "
             f"(method: {src.method}) and exported to ONNX by edgesent. Serve it without torch with "
             f"`edgesent predict {name} \"some text\"` or `edgesent demo {name}`.", "",
             *_lineage_lines(src), "## Data", ""]
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
    for file, info in manifest["models"].items():
        acc = info.get("metrics", {}).get("accuracy")
        note = info.get("quantization", {}).get("variant", "") if info.get("quantization") else ""
        if "max_abs_diff" in info:
            note = (note + " " if note else "") + f"max abs diff vs PyTorch {info['max_abs_diff']:.1e}"
        lines.append(f"| {file} | {info['precision']} | {_size(folder / file)} | "
                     f"{'n/a' if acc is None else f'{acc:.4f}'} | {note} |")
    if q.get("drop_points") is not None:
        lines += ["", f"INT8 accuracy drop: {q['drop_points']:.2f} points (gate: at most {q['max_drop']} points)."]
    lines += ["", "## Intended use and limitations", "",
              "Sentiment classification of short English texts similar to the training data, on CPU or edge devices. "
              "Accuracy is only known on the data above; expect lower accuracy on other domains, languages, sarcasm "
              "and texts much longer than max_length (which are truncated). INT8 results can differ from fp32 on "
              "borderline inputs. Do not use it for decisions about people without human review.", ""]
    return "\n".join(lines)


def print_summary(folder: Path, manifest: Manifest) -> None:
    """The files with their sizes and accuracy, the parity check and every INT8 attempt, on stdout."""
    q = manifest.get("quantization") or {}
    print(f"artifact: {folder}")
    print(f"{'file':<18} {'precision':<9} {'size':>10} {'accuracy':>9}")
    for file, info in manifest["models"].items():
        acc = info.get("metrics", {}).get("accuracy")
        print(f"{file:<18} {info['precision']:<9} {_size(folder / file):>10} {'-' if acc is None else f'{acc:.4f}':>9}")
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
            print(f"INT8 kept: {q['winner']['variant']} (fp32 {_rounded(q['fp32_accuracy'])}, "
                  f"int8 {_rounded(q['int8_accuracy'])})")


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
