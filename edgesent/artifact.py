"""The artifact folder and its manifest `edgesent.json` (torch-free: used by the runtime).

An artifact is one self-contained folder:

    model.onnx            fp32 ONNX (dynamic batch and sequence axes)
    model.int8.onnx       dynamic (or static) INT8, when exported with --int8 / --static
    model.fp16.onnx       fp16, when exported with --fp16 (for GPU execution providers)
    model.int8.openvino.xml + .bin
                          OpenVINO IR, static INT8 by NNCF, when exported with --openvino (engine "openvino")
    tokenizer.json ...    the tokenizer (+ tokenizer_config.json, special_tokens_map.json)
    config.json           the transformers config (lets optimum's ORTModelForSequenceClassification load it)
    README.md             model card
    edgesent.json         this manifest

This module is the only place that spells those file names (`FILES`, `file_for`) and the only
place that says what precision and scheme a model file has (`Manifest.models`, `ModelEntry.variant`).

Manifest fields (version 1), typed by `Manifest` (pydantic; unknown fields are kept, so an older
edgesent can read a newer minor addition):
    manifest_version, created, edgesent_version
    labels: [names in id order]
    preprocessing: {max_length, truncation, head_share, lowercase, padding_side, pad_token, pad_token_id, ...}
    inputs: [ONNX input names]
    source: {run, recipe (dict), base_model, method}
    files: {filename: {sha256, bytes}}        every file in the folder except edgesent.json
    models: {filename: {precision, scheme, engine, metrics: {...}, quantization: {...}}}
    engine: the engine a runtime uses when not told (onnxruntime, or openvino once its INT8 passed the gate)
    quantization: {settings, fp32_accuracy, int8_accuracy, drop_points, ...}
    versions: {package: version}

The manifest is a JSON document, so the model also reads like one (`manifest["labels"]`,
`manifest.get("quantization")`) as well as by attribute.

`load_manifest` verifies every listed file's size and sha256 and refuses a folder that does not
match, with one line that says which file and why (a git-lfs pointer or truncated download is named
as such rather than surfacing as a protobuf error).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgesent.errors import ArtifactError, atomic_write_text

MANIFEST = "edgesent.json"
MANIFEST_VERSION = 1
FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx",  # precision -> file
         "openvino-int8": "model.int8.openvino.xml"}  # OpenVINO IR; its weights are the .bin beside it
ENGINES = ("onnxruntime", "openvino")
SERVE_ORDER = ("int8", "fp32")  # what a runtime serves when not told: INT8 when present, else fp32
# per engine: what the engine serves for a precision (OpenVINO reads the fp32 ONNX file itself)
ENGINE_FILES = {"onnxruntime": {"fp32": "fp32", "int8": "int8", "fp16": "fp16"},
                "openvino": {"fp32": "fp32", "bf16": "fp32", "int8": "openvino-int8"}}
LFS_MAGIC = b"version https://git-lfs.github.com/spec/"


def file_for(precision: str) -> str:
    """The artifact file name of a precision (`int8` -> `model.int8.onnx`); other names pass through."""
    return FILES.get(precision, precision)


def ir_weights(name: str) -> str:
    """The weights file of an OpenVINO IR (`model.int8.openvino.xml` -> `model.int8.openvino.bin`)."""
    return name[: -len(".xml")] + ".bin" if name.endswith(".xml") else name


def loaded_files(name: str) -> list[str]:
    """Every file a session on model file `name` reads (an IR is its .xml and its .bin)."""
    return [name, ir_weights(name)] if name.endswith(".xml") else [name]


CONFIG = "config.json"  # the transformers config saved beside the model files


def max_tokens(folder: str | os.PathLike) -> int | None:
    """The longest input the artifact's model positions allow (from its config.json; None when unknown)."""
    from types import SimpleNamespace

    from edgesent.archs import arch_for
    from edgesent.errors import ModelError

    path = Path(folder) / CONFIG
    try:
        config = SimpleNamespace(**json.loads(path.read_text(encoding="utf-8")))
        return arch_for(config).max_tokens(config)
    except (OSError, ValueError, TypeError, ModelError):
        return None


class _Doc(BaseModel):
    """A typed JSON object that can also be read by key, like the file it comes from."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    def __getitem__(self, key: str):
        if key in type(self).model_fields or key in (self.model_extra or {}):
            return getattr(self, key)
        raise KeyError(key)

    def __contains__(self, key: str) -> bool:
        return (key in type(self).model_fields and getattr(self, key) is not None) or key in (self.model_extra or {})

    def get(self, key: str, default=None):
        try:
            value = self[key]
        except KeyError:
            return default
        return default if value is None else value


class FileEntry(_Doc):
    sha256: str
    bytes: int


class ModelEntry(_Doc):
    precision: Literal["fp32", "fp16", "int8", "bf16"]
    scheme: Literal["dynamic", "static"] | None = None  # INT8 only: activations quantized per batch or calibrated
    engine: Literal["onnxruntime", "openvino"] = "onnxruntime"  # keep in step with ENGINES
    metrics: dict[str, Any] = Field(default_factory=dict)
    quantization: dict[str, Any] | None = None

    @property
    def variant(self) -> str:
        """The name bench and reports use: fp32, fp16, int8, int8-static (engine-prefixed by callers)."""
        scheme = self.scheme or ("static" if (self.quantization or {}).get("format") == "QDQ" else None)
        return f"{self.precision}-static" if scheme == "static" else self.precision


class Manifest(_Doc):
    manifest_version: int = MANIFEST_VERSION
    labels: list[str] = Field(min_length=1)
    preprocessing: dict[str, Any]
    files: dict[str, FileEntry] = Field(default_factory=dict)
    models: dict[str, ModelEntry] = Field(default_factory=dict)
    inputs: list[str] = Field(default_factory=list)
    source: dict[str, Any] | None = None
    quantization: dict[str, Any] | None = None
    engine: Literal["onnxruntime", "openvino"] = "onnxruntime"  # the default engine (see the module docstring)

    def model_files(self, engine: str | None = None) -> list[str]:
        """Model files the folder holds (ONNX and OpenVINO IR), fp32 first, then INT8, then fp16, then others;
        with `engine`, only that engine's own files."""
        order = {name: i for i, name in enumerate(FILES.values())}
        names = [n for n in self.files if n.endswith((".onnx", ".xml"))] or list(self.models)
        if engine is not None:
            names = [n for n in names if self.entry(n).engine == engine]
        return sorted(names, key=lambda n: (order.get(n, len(order)), n))

    def entry(self, name: str) -> ModelEntry:
        """The models entry of a file; a file the manifest does not describe is taken from its name."""
        if name in self.models:
            return self.models[name]
        precision = next((p for p, f in FILES.items() if f == name), "fp32")
        if name.endswith(".xml"):
            return ModelEntry(precision="int8" if "int8" in name else "fp32", engine="openvino")
        return ModelEntry(precision=precision)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=False)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def file_table(folder: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """sha256 and size of every regular file in `folder` (recursively), manifest excluded."""
    folder = Path(folder)
    table = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            rel = path.relative_to(folder).as_posix()
            table[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return table


def write_manifest(folder: str | os.PathLike, manifest: dict[str, Any] | Manifest) -> Path:
    """Validate, then write the manifest last, after hashing every other file of the folder."""
    folder = Path(folder)
    data = manifest.to_json() if isinstance(manifest, Manifest) else dict(manifest)
    data.setdefault("manifest_version", MANIFEST_VERSION)
    data["files"] = file_table(folder)
    Manifest.model_validate(data)  # never write a manifest this module could not read back
    return atomic_write_text(folder / MANIFEST, json.dumps(data, indent=2, sort_keys=False) + "\n")


def _describe_bad_file(path: Path, expected: dict) -> str:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(200)
    if head.startswith(LFS_MAGIC):
        return f"{path.name} is a git-lfs pointer, not the file itself (run `git lfs pull` in the artifact's repo)"
    if size < expected.get("bytes", size):
        return f"{path.name} is truncated ({size} of {expected['bytes']} bytes): download it again"
    return f"{path.name} does not match its sha256 in {MANIFEST}: the file was changed or corrupted"


def load_manifest(folder: str | os.PathLike, verify: bool = True) -> Manifest:
    """Read `edgesent.json` and (by default) check every file it lists."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"artifact folder not found: {folder}")
    path = folder / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{folder} is not an edgesent artifact (no {MANIFEST}); export one with `edgesent export`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path} is not a manifest object")
    version = manifest.get("manifest_version")
    if not isinstance(version, int):
        raise ArtifactError(f"{path} has no manifest_version")
    if version > MANIFEST_VERSION:
        raise ArtifactError(
            f"{folder} was written by a newer edgesent (manifest version {version}, this one reads up to "
            f"{MANIFEST_VERSION}): upgrade edgesent"
        )
    for key in ("labels", "preprocessing", "files"):
        if key not in manifest:
            raise ArtifactError(f"{path} lacks the '{key}' field")
    try:
        typed = Manifest.model_validate(manifest)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ArtifactError(f"{path}: bad '{where}' field ({err['msg']})") from None
    if verify:
        verify_files(folder, typed)
    return typed


def verify_files(folder: Path, manifest: Manifest, names: list[str] | None = None) -> None:
    root = folder.resolve()
    for name, expected in manifest["files"].items():
        if names is not None and name not in names:
            continue
        path = (folder / name).resolve()
        if root not in path.parents:
            raise ArtifactError(f"{MANIFEST} lists {name!r}, which is outside the artifact folder")
        if not path.is_file():
            raise ArtifactError(f"{folder} is incomplete: {name} is missing")
        if path.stat().st_size != expected.get("bytes") or sha256_file(path) != expected.get("sha256"):
            raise ArtifactError(f"{folder}: {_describe_bad_file(path, expected)}")


def pick_model_file(folder: str | os.PathLike, manifest: Manifest, prefer: str | None = None,
                    engine: str = "onnxruntime") -> str:
    """The model file `engine` serves: `prefer` (a precision or a file name) if given, else INT8, then fp32
    (fp16 only when asked for). OpenVINO serves its own INT8 IR, else reads the fp32 ONNX file."""
    files, table = manifest.files, ENGINE_FILES[engine]
    if prefer:
        precision = prefer in FILES or prefer in table
        if (precision and prefer not in table) or (engine == "onnxruntime" and prefer.endswith(".xml")):
            raise ArtifactError(f"{folder}: {engine} cannot serve '{prefer}' (choose one of "
                                f"{', '.join(table)} or a model file name)")
        name = file_for(table[prefer]) if precision else prefer
        if name not in files:
            raise ArtifactError(f"{folder} has no {name} (it has: {', '.join(manifest.model_files())})"
                                + (" (export with --openvino)" if name == FILES["openvino-int8"] else ""))
        return name
    for precision in SERVE_ORDER:
        if file_for(table[precision]) in files:
            return file_for(table[precision])
    raise ArtifactError(f"{folder} holds no ONNX model")


def is_artifact(folder: str | os.PathLike) -> bool:
    return (Path(folder) / MANIFEST).is_file()
