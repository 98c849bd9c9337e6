"""The artifact folder and its manifest `edgesent.json` (torch-free: used by the runtime).

An artifact is one self-contained folder:

    model.onnx            fp32 ONNX (dynamic batch and sequence axes)
    model.int8.onnx       dynamic (or static) INT8, when exported with --int8 / --static
    model.fp16.onnx       fp16, when exported with --fp16 (for GPU execution providers)
    tokenizer.json ...    the tokenizer (+ tokenizer_config.json, special_tokens_map.json)
    config.json           the transformers config (lets optimum's ORTModelForSequenceClassification load it)
    README.md             model card
    edgesent.json         this manifest

Manifest fields (version 1):
    manifest_version, created, edgesent_version
    labels: [names in id order]
    preprocessing: {max_length, truncation, head_share, lowercase, padding_side, pad_token, pad_token_id}
    inputs: [ONNX input names]
    source: {run, recipe (dict), base_model, method}
    files: {filename: {sha256, bytes}}        every file in the folder except edgesent.json
    models: {filename: {precision, metrics: {...}, quantization: {...}}}
    quantization: {settings, fp32_accuracy, int8_accuracy, drop_points, ...}
    versions: {package: version}

`load_manifest` verifies every listed file's size and sha256 and refuses a folder that does not
match, with one line that says which file and why (a git-lfs pointer or truncated download is named
as such rather than surfacing as a protobuf error).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from edgesent.errors import ArtifactError, atomic_write_text

MANIFEST = "edgesent.json"
MANIFEST_VERSION = 1
MODEL_FILES = ("model.int8.onnx", "model.onnx", "model.fp16.onnx")
LFS_MAGIC = b"version https://git-lfs.github.com/spec/"


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


def write_manifest(folder: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """Write the manifest last, after hashing every other file of the folder."""
    folder = Path(folder)
    manifest = dict(manifest)
    manifest.setdefault("manifest_version", MANIFEST_VERSION)
    manifest["files"] = file_table(folder)
    return atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def _describe_bad_file(path: Path, expected: dict) -> str:
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(200)
    if head.startswith(LFS_MAGIC):
        return f"{path.name} is a git-lfs pointer, not the file itself (run `git lfs pull` in the artifact's repo)"
    if size < expected.get("bytes", size):
        return f"{path.name} is truncated ({size} of {expected['bytes']} bytes): download it again"
    return f"{path.name} does not match its sha256 in {MANIFEST}: the file was changed or corrupted"


def load_manifest(folder: str | os.PathLike, verify: bool = True) -> dict[str, Any]:
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
    if verify:
        verify_files(folder, manifest)
    return manifest


def verify_files(folder: Path, manifest: dict[str, Any], names: list[str] | None = None) -> None:
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


def pick_model_file(folder: str | os.PathLike, manifest: dict[str, Any], prefer: str | None = None) -> str:
    """The ONNX file to serve: `prefer` if given, else INT8, then fp32 (fp16 only when asked for)."""
    files = manifest.get("files", {})
    if prefer:
        name = {"int8": "model.int8.onnx", "fp32": "model.onnx", "fp16": "model.fp16.onnx"}.get(prefer, prefer)
        if name not in files:
            raise ArtifactError(f"{folder} has no {name} (it has: {', '.join(n for n in files if n.endswith('.onnx'))})")
        return name
    for name in ("model.int8.onnx", "model.onnx"):
        if name in files:
            return name
    raise ArtifactError(f"{folder} holds no ONNX model")


def is_artifact(folder: str | os.PathLike) -> bool:
    return (Path(folder) / MANIFEST).is_file()
