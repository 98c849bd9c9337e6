"""Errors users can act on.

Every expected failure (bad recipe, bad data, missing model, tampered artifact, ...) raises
`EdgesentError` with one line that names the problem and, where possible, the fix. The CLI prints
that line and exits non-zero; `--debug` shows the traceback instead. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path


class EdgesentError(Exception):
    """A failure caused by the user's input or environment, reported as one line."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class RecipeError(EdgesentError):
    """The recipe (or a --set override) is invalid."""


class DataError(EdgesentError):
    """The data set cannot be used as given."""


class ModelError(EdgesentError):
    """The model, checkpoint or artifact cannot be loaded."""


class ArtifactError(ModelError):
    """An exported artifact folder is missing, incomplete or tampered with."""


class GateError(EdgesentError):
    """A quality gate (export validation, INT8 accuracy drop) failed."""

    exit_code = 3


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message (its type name when it has none), cut to `limit`."""
    lines = [x for x in str(exc).strip().splitlines() if x.strip()]
    return (lines[0] if lines else type(exc).__name__)[:limit]


def json_record(path: str | os.PathLike, number: int, line: str) -> dict:
    """One line of a JSON-lines file as a dict, or the DataError that names the file and line."""
    import json

    try:
        record = json.loads(line)
    except ValueError as exc:
        raise DataError(f"{path} line {number} is not valid JSON: {getattr(exc, 'msg', first_line(exc))}") from None
    if not isinstance(record, dict):
        raise DataError(f"{path} line {number} is not a JSON object")
    return record


def hub_error(name: str, exc: BaseException, fix: str, cls: type[EdgesentError] | None = None) -> EdgesentError:
    """The one-line error for a hub id that cannot be loaded (offline machine or wrong id); `fix` says
    how to point edgesent at a local copy instead."""
    return (cls or EdgesentError)(
        f"cannot reach the hub for '{name}' ({type(exc).__name__}: the hub is unreachable or the id is wrong); {fix}"
    )


def check_writable(directory: str | os.PathLike, need_bytes: int = 0) -> Path:
    """Fail early, before any work, when `directory` cannot be created/written or the disk is full."""
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".edgesent-write-test-"):
            pass
    except OSError as exc:
        raise EdgesentError(f"output directory {path} is not writable: {exc.strerror or exc}") from exc
    if need_bytes:
        free = shutil.disk_usage(path).free
        if free < need_bytes:
            raise EdgesentError(
                f"not enough free disk space in {path}: {free / 1e6:.0f} MB free, about {need_bytes / 1e6:.0f} MB needed"
            )
    return path


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike, overwrite: bool = False):
    """Build a folder under a temporary sibling name and move it into place only when complete.

    An interrupted build (exception, Ctrl-C, kill -9) never leaves `final` half-written: the
    temporary `.<name>.partial-<pid>` folder is removed on exceptions and ignored by loaders.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        if not overwrite:
            shutil.rmtree(tmp, ignore_errors=True)
            raise EdgesentError(f"{final} already exists (pass --overwrite or choose another --out)")
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file via a temporary name + rename, so readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def exit_on_error(exc: EdgesentError) -> None:
    """The one error exit of every entry point: `error: <one line>` on stderr, the error's exit code."""
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(exc.exit_code)


def run_main(main, argv: list[str] | None = None) -> None:
    """Exit with `main(argv)`'s return code; an EdgesentError becomes one `error: ...` line (for scripts)."""
    try:
        code = main(argv)
    except EdgesentError as exc:
        exit_on_error(exc)
    sys.exit(code)
