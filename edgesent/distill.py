"""Knowledge distillation: train a (smaller) student on a fine-tuned teacher's soft labels.

A recipe with a `distill:` section (edgesent/config.py `DistillConfig`) trains with

    loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, gold)

(Hinton et al. 2015; the T^2 keeps the soft-loss gradients on the scale of the hard loss). The
student is usually built from the teacher's own layers (`model.name_or_path: <teacher run>`,
`model.keep_layers: [1, 3, 5]`, see `edgesent.model.keep_layers`), but any model with the same
label names works: logits are per text, so teacher and student may use different tokenizers.

Flow inside `edgesent train` (edgesent/train.py calls the three functions below):
1. `resolve_teacher` (before any data or weights are read): the teacher exists, is a run folder,
   an artifact folder or a model folder/hub id, has the recipe's label names, and is not the
   student itself. Each problem is one line.
2. `teacher_logits`: the teacher's logits for every training text, computed once -- through the
   torch-free runtime `Classifier` for an artifact (a run folder with `artifact/` uses it too), through
   PyTorch otherwise -- and cached as `<output_dir>/.cache/teacher-logits/<key>.npy`. The key hashes
   the teacher's files (the manifest's sha256 of the served ONNX file and tokenizer, or the weights
   file), its preprocessing, and the texts, so a re-run or `--resume` reuses them and any change to
   the teacher or the data recomputes them.
3. `DistillDataset` + `DistillCollator` carry each example's teacher logits into the batch, and the
   Trainer subclass from `trainer_class` replaces the loss (evaluation batches, which have no teacher
   logits, keep plain cross-entropy, so validation loss stays comparable across runs).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgesent.errors import EdgesentError, RecipeError

logger = logging.getLogger("edgesent")

CACHE_DIR = Path(".cache") / "teacher-logits"


@dataclass
class Teacher:
    kind: str  # "artifact", "run" or "model"
    ref: str  # resolved path (or hub id)
    labels: list[str]
    fingerprint: str  # sha256 over the teacher's files and preprocessing


# --------------------------------------------------------------------------------------------
# 1. Which teacher


def resolve_teacher(recipe) -> Teacher:
    """The recipe's teacher, checked (exists, same labels, not the student); one-line RecipeError otherwise."""
    from edgesent import artifact as art
    from edgesent import model as M

    name = recipe.distill.teacher
    path = Path(name).expanduser()
    labels = list(recipe.data.labels)
    if M.is_local(name) and not path.exists():
        raise RecipeError(f"distill.teacher not found: {name}")
    if path.is_dir() and art.is_artifact(path):
        teacher = _artifact_teacher(path)
    elif path.is_dir() and (path / "artifact").is_dir() and art.is_artifact(path / "artifact") and M.is_run_dir(path):
        teacher = _artifact_teacher(path / "artifact")  # a run's own artifact: same model, no torch needed
    elif path.is_dir() and M.is_run_dir(path):
        from edgesent.config import load_recipe

        run_recipe = load_recipe(path / "recipe.yaml")
        weights = sorted(p for sub in ("model", "adapter") for p in (path / sub).glob("*.safetensors"))
        teacher = Teacher("run", str(path.resolve()), M.run_labels(path, run_recipe),
                          _hash([*(_file_sha(p) for p in weights), (path / "recipe.yaml").read_text()]))
    elif path.is_dir() and not (path / "config.json").is_file():
        raise RecipeError(f"distill.teacher {name} is neither a run folder, an artifact folder nor a model folder")
    else:
        config = M.load_config(name)
        id2label = getattr(config, "id2label", None) or {}
        found = [str(id2label[i]) for i in sorted(id2label)]
        weights = sorted(path.glob("*.safetensors")) if path.is_dir() else []
        teacher = Teacher("model", str(path.resolve()) if path.is_dir() else name, found,
                          _hash([name, *(_file_sha(p) for p in weights)]))
    if teacher.labels != labels:
        raise RecipeError(f"distill.teacher {name} has labels {teacher.labels}, the recipe's data.labels are {labels}")
    if _same_model(teacher.ref, recipe.model.name_or_path) and recipe.model.keep_layers is None:
        raise RecipeError(f"distill.teacher {name} is the student itself (model.name_or_path); "
                          "distil into a smaller model (e.g. model.keep_layers) or another architecture")
    return teacher


def _artifact_teacher(folder: Path) -> Teacher:
    from edgesent import artifact as art

    manifest = art.load_manifest(folder, verify=False)
    served = art.pick_model_file(folder, manifest)
    files = manifest["files"]
    parts = [files[n]["sha256"] for n in (served, "tokenizer.json") if n in files]
    fingerprint = _hash([*parts, json.dumps(manifest["preprocessing"], sort_keys=True)])
    return Teacher("artifact", str(folder.resolve()), [str(x) for x in manifest["labels"]], fingerprint)


def _same_model(teacher_ref: str, student: str) -> bool:
    """Teacher and student are the same model: the same folder, or a run and the artifact inside it."""
    a, b = Path(teacher_ref).expanduser(), Path(student).expanduser()
    if not (a.exists() and b.exists()):
        return teacher_ref == student
    a, b = a.resolve(), b.resolve()
    roots = lambda p: {p, p.parent} if p.name == "artifact" else {p}  # noqa: E731
    return bool(roots(a) & roots(b))


def _file_sha(path: Path) -> str:
    from edgesent.artifact import sha256_file

    return sha256_file(path)


def _hash(parts: list[str]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# 2. Teacher logits, computed once and cached


def cache_path(recipe, teacher: Teacher, texts: list[str]) -> Path:
    key = _hash([teacher.fingerprint, str(len(texts)), *texts])[:24]
    return Path(recipe.output_dir) / CACHE_DIR / f"{key}.npy"


def teacher_logits(recipe, teacher: Teacher, texts: list[str]) -> tuple[np.ndarray, Path, bool]:
    """(logits of shape (len(texts), labels), cache file, whether it came from the cache)."""
    path = cache_path(recipe, teacher, texts)
    if path.is_file():
        cached = np.load(path)
        if cached.shape == (len(texts), len(teacher.labels)):
            return cached, path, True
    logger.info("computing %s teacher logits for %d texts (%s)", teacher.kind, len(texts), teacher.ref)
    batch = recipe.distill.batch_size
    if teacher.kind == "artifact":
        from edgesent.runtime import Classifier

        logits = Classifier(teacher.ref, threads=recipe.training.threads).logits(texts, batch_size=batch)
    else:
        logits = _torch_logits(teacher.ref, texts, batch)
    logits = np.asarray(logits, dtype=np.float32)
    if not np.isfinite(logits).all():
        raise EdgesentError(f"distill.teacher {teacher.ref} produced non-finite logits")
    _save_atomic(path, logits)
    return logits, path, False


def _save_atomic(path: Path, array: np.ndarray) -> None:
    """np.save under a temporary name, then rename: a killed run never leaves a partial cache file."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        np.save(fh, array)
    os.replace(tmp, path)


def _torch_logits(ref: str, texts: list[str], batch_size: int) -> np.ndarray:
    """Teacher logits through PyTorch (run folder, model folder or hub id), with the teacher's own preprocessing."""
    import torch

    from edgesent.export.source import resolve_source
    from edgesent.textproc import length_buckets

    src = resolve_source(ref)
    ids = src.preprocessor.encode(texts)
    out = np.zeros((len(texts), len(src.labels)), dtype=np.float32)
    with torch.inference_mode():
        for bucket in length_buckets([len(x) for x in ids], batch_size):
            feed = {k: torch.from_numpy(v) for k, v in src.preprocessor.pad([ids[i] for i in bucket]).items()}
            out[bucket] = src.model(**feed).logits.float().numpy()
    return out


# --------------------------------------------------------------------------------------------
# 3. Training: the examples carry their teacher logits, the Trainer mixes the two losses


class DistillDataset:
    """A TokenizedDataset whose examples also carry the teacher's logits."""

    def __init__(self, base, logits: np.ndarray):
        if len(base) != len(logits):
            raise EdgesentError(f"teacher logits for {len(logits)} texts, but the train split has {len(base)}")
        self.base, self.logits = base, logits
        self.input_ids = base.input_ids  # LengthGroupedSampler and token counts read these

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.base[i], "teacher_logits": self.logits[i]}


def collator(base):
    """The data.PadCollator `base`, plus a float tensor `teacher_logits` when the examples carry them."""

    def collate(features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        batch = base([{k: v for k, v in f.items() if k != "teacher_logits"} for f in features])
        if features and "teacher_logits" in features[0]:
            batch["teacher_logits"] = torch.from_numpy(np.stack([f["teacher_logits"] for f in features]))
        return batch

    return collate


def distill_loss(student, teacher, labels, temperature: float, alpha: float):
    """alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, labels), batch means."""
    import torch.nn.functional as F

    student, teacher = student.float(), teacher.float()
    t = temperature
    soft = F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1),
                    reduction="batchmean", log_target=True)
    hard = F.cross_entropy(student, labels)
    return alpha * t * t * soft + (1 - alpha) * hard


def trainer_class(base, temperature: float, alpha: float):
    """A subclass of the Trainer class `base` whose training loss is `distill_loss`."""

    class DistillTrainer(base):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            teacher = inputs.pop("teacher_logits", None)
            if teacher is None:  # evaluation batches: plain cross-entropy
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
            loss = distill_loss(outputs.logits, teacher.to(outputs.logits.device), inputs["labels"], temperature, alpha)
            return (loss, outputs) if return_outputs else loss

    return DistillTrainer


def summary(recipe, teacher: Teacher, cache: Path, reused: bool) -> dict:
    """What metrics.json (and the artifact, through the recipe) records about the distillation."""
    d = recipe.distill
    return {"teacher": teacher.ref, "teacher_kind": teacher.kind, "teacher_fingerprint": teacher.fingerprint,
            "temperature": d.temperature, "alpha": d.alpha, "keep_layers": recipe.model.keep_layers,
            "teacher_logits_cache": str(cache), "teacher_logits_reused": reused}
