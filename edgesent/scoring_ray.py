"""`edgesent predict --engine ray`: score files too big for one machine on Ray Data.

    edgesent predict ARTIFACT --file reviews/ --engine ray [--ray-address ADDR] [--workers N] --out scored/

Flow: resolve --file (a file, a folder or a glob; local paths or URIs such as s3://bucket/dir/*.parquet
where the cluster's pyarrow has that filesystem) -> check everything that can be checked on this
machine (artifact loads, the text column exists, csv/jsonl/txt are valid UTF-8: the same one-line
errors as single-process `predict`) -> start a local Ray, or join --ray-address -> Ray Data reads
the files, cuts them into blocks of BLOCK_ROWS rows, and `map_batches` sends each block to a pool of
`--workers` actors; each actor loads the artifact once (`edgesent.runtime.Classifier`, its
onnxruntime threads = the actor's CPUs) -> parquet shards are written to a temporary folder beside
--out, which is renamed into place only when every block is written.

Decisions:
- Output columns are those of single-process predict (`scoring.scored_columns` builds them): every
  input column, then label, confidence, prob_<label>, empty. Shards are not in input order: keep an
  id column in the input if you need to join back.
- Faults: a killed actor is restarted and its unfinished blocks are run again: Ray Data gives its
  actor pools max_restarts=-1 and max_task_retries=-1 by default (Ray 2.60 deprecates passing them
  to map_batches, so they are not restated here). A block's output is only written after its task
  finished, so no row is lost or written twice (tests/test_ray.py kills an actor with SIGKILL).
- A local Ray gets workers x threads CPUs plus one for reading and writing tasks; without that
  spare CPU the actor pool would hold every CPU and the read tasks could never be scheduled.
- --out is a folder that must not exist yet. On a multi-node cluster it must be storage that every
  node sees (a shared filesystem), like the input files and the artifact.
- Ray's own logs and progress bars stay behind --debug; progress here is rows scored and rows/s.
"""

from __future__ import annotations

import codecs
import contextlib
import fnmatch
import logging
import os
import re
import shutil
import sys
import threading
import time
import warnings
from pathlib import Path

from edgesent.errors import DataError, EdgesentError, check_writable, first_line, json_record
from edgesent.scoring import _decode_lines, _missing_column, check_columns, output_columns, scored_columns

FORMATS = (".csv", ".jsonl", ".parquet", ".txt")
BLOCK_ROWS = 1024  # rows per Ray block (one actor task); small enough to spread a single file over workers
RAY_EXTRA = 'Ray is not installed: pip install "edgesent[ray]" (or use the default --engine onnxruntime)'
_URI = re.compile(r"^[A-Za-z][\w+.-]*://")


def _debug() -> bool:
    return bool(os.environ.get("EDGESENT_DEBUG"))


def import_ray():
    """`ray` and `ray.data`, or one line naming the extra that installs them."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise EdgesentError(RAY_EXTRA) from None
    return ray


# --------------------------------------------------------------------------------------------
# Inputs


def _as_uri(spec: str | os.PathLike) -> str:
    """A typer `Path` turns "s3://b/k" into "s3:/b/k"; put the second slash back."""
    text = os.fspath(spec)
    return re.sub(r"^([A-Za-z][\w+.-]*):/(?!/)", r"\1://", text) if not os.path.exists(text) else text


def resolve_inputs(spec: str | os.PathLike):
    """(files, format suffix, pyarrow filesystem or None for local) for a file, a folder or a glob."""
    import pyarrow.fs as pafs

    spec = _as_uri(spec)
    remote = bool(_URI.match(spec))
    target = spec if remote else os.path.abspath(os.path.expanduser(spec))
    first_glob = min((target.find(c) for c in "*?[" if c in target), default=-1)
    base = target if first_glob < 0 else target[: target.rfind("/", 0, first_glob) + 1] or "/"
    try:
        fs, root = pafs.FileSystem.from_uri(base)
        info = fs.get_file_info(root)
    except Exception as exc:  # unknown scheme, no credentials, ...
        raise DataError(f"--file {spec}: cannot open it ({first_line(exc)})") from None
    if first_glob < 0 and info.type == pafs.FileType.File:
        files = [root]
    elif info.type == pafs.FileType.Directory:
        pattern = None if first_glob < 0 else root.rstrip("/") + "/" + target[len(base):]
        found = fs.get_file_info(pafs.FileSelector(root, recursive=True))
        files = sorted(i.path for i in found if i.type == pafs.FileType.File
                       and not any(part.startswith((".", "_")) for part in Path(i.path[len(root):]).parts)
                       and (pattern is None or fnmatch.fnmatch(i.path, pattern)))
        if pattern is None:
            files = [f for f in files if Path(f).suffix.lower() in FORMATS]
    else:
        raise DataError(f"input file not found: {spec}")
    kinds = {Path(f).suffix.lower() for f in files}
    if not files:
        raise DataError(f"--file {spec} matches no {', '.join(FORMATS)} files")
    if len(kinds) > 1 or not kinds <= set(FORMATS):
        raise DataError(f"--file {spec} must match files of one format ({', '.join(FORMATS)}), "
                        f"found {', '.join(sorted(kinds))}")
    local = isinstance(fs, pafs.LocalFileSystem)
    return files, kinds.pop(), None if local else fs


def check_local_inputs(files: list[str], kind: str, column: str) -> list[str]:
    """What single-process predict refuses, refused here too (before Ray starts): non-UTF-8 text
    (naming the line), a missing text column (naming the columns there are). Returns the first
    file's column names."""
    if kind != ".parquet":
        for name in files:
            decoder = codecs.getincrementaldecoder("utf-8")()
            with open(name, "rb") as fh:
                try:
                    while chunk := fh.read(1 << 24):
                        decoder.decode(chunk)
                    decoder.decode(b"", final=True)
                except UnicodeDecodeError:
                    for _ in _decode_lines(Path(name)):  # raises the error that names the line
                        pass
    first = Path(files[0])
    if kind == ".txt":
        if column != "text":
            raise DataError(f"{first}: a .txt file has one column, 'text'; drop --column")
        return ["text"]
    if kind == ".parquet":
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(first).names
        except Exception as exc:
            raise DataError(f"{first} is not a readable parquet file: {first_line(exc)}") from None
    elif kind == ".csv":
        import csv

        with open(first, encoding="utf-8-sig", newline="") as fh:
            names = next(csv.reader(fh), None) or []
    else:
        with open(first, encoding="utf-8-sig") as fh:
            names = next((list(json_record(first, number, line)) for number, line in enumerate(fh, start=1)
                          if line.strip()), [])
    if column not in names:
        raise _missing_column(first, column, names)
    return names


def read_dataset(files: list[str], kind: str, column: str, filesystem=None):
    """A Ray Dataset over `files`, the text column read as strings (as single-process predict reads it)."""
    import pyarrow as pa
    import ray.data

    if kind == ".parquet":
        return ray.data.read_parquet(files, filesystem=filesystem)
    if kind == ".csv":
        import pyarrow.csv as pacsv

        return ray.data.read_csv(files, filesystem=filesystem,
                                 parse_options=pacsv.ParseOptions(newlines_in_values=True),
                                 convert_options=pacsv.ConvertOptions(column_types={column: pa.string()}))
    if kind == ".jsonl":  # JSON strings are strings already; fields stay in the file's order
        return ray.data.read_json(files, filesystem=filesystem)
    return ray.data.read_text(files, filesystem=filesystem, drop_empty_lines=False)


# --------------------------------------------------------------------------------------------
# The actor


class Scorer:
    """Ray Data callable class: the artifact is loaded once per actor and scores pyarrow batches."""

    def __init__(self, artifact: str, column: str, model: str | None, threads: int, batch_size: int, counter=None,
                 prefix: str = ""):
        from edgesent.runtime import Classifier

        self.clf = Classifier(artifact, model=model, threads=threads)
        self.column, self.batch_size, self.counter, self.prefix = column, batch_size, counter, prefix

    def __call__(self, batch):
        import pyarrow as pa

        if self.column not in batch.column_names:
            raise _missing_column(Path("input"), self.column, batch.column_names)
        check_columns(Path("input"), batch.column_names, output_columns(self.clf.labels, self.prefix), self.prefix)
        texts = batch.column(self.column).to_pylist()
        scored, _ = scored_columns(self.clf, {}, texts, self.batch_size, self.prefix)
        for name, values in scored.items():
            batch = batch.append_column(name, pa.array(values))
        if self.counter is not None:
            self.counter.add.remote(len(texts))
        return batch


def _counter(ray):
    @ray.remote(num_cpus=0)
    class Counter:
        """Rows scored so far (progress only: a retried block counts twice here, never in the output)."""

        def __init__(self):
            self.rows = 0

        def add(self, n: int) -> None:
            self.rows += n

        def value(self) -> int:
            return self.rows

    return Counter.remote()


# --------------------------------------------------------------------------------------------
# Running


def start_ray(address: str | None, cpus: int):
    """Join `address`, or start a local Ray with `cpus` CPUs; returns (ray, started_here, seconds)."""
    ray = import_ray()
    start = time.perf_counter()
    if ray.is_initialized():
        return ray, False, 0.0
    quiet = dict(include_dashboard=False, logging_level=logging.INFO if _debug() else logging.ERROR,
                 log_to_driver=_debug())
    try:
        with _quiet_core_worker():
            if address:
                ray.init(address=address, **quiet)
            else:  # Ray renices its workers to 15 by default: on a busy box they would score at a crawl
                os.environ.setdefault("RAY_worker_niceness", "0")
                ray.init(num_cpus=cpus, **quiet)
    except Exception as exc:
        where = f"--ray-address {address}" if address else "a local Ray"
        raise EdgesentError(f"could not start {where}: {first_line(exc)}") from None
    return ray, True, time.perf_counter() - start


@contextlib.contextmanager
def _quiet_core_worker():
    """Without --debug, Ray's C++ core worker in this process logs only fatal errors (e.g. not the
    notice every Ray Data actor pool triggers about constructor arguments in the object store);
    the line announcing that level, written to stderr while Ray starts, is dropped too."""
    if _debug():
        yield
        return
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as sink:
            os.dup2(sink.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _root_cause(exc: BaseException) -> BaseException:
    """The user-level error inside Ray's wrappers (an EdgesentError when there is one)."""
    seen, todo = [], [exc]
    while todo:
        e = todo.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        if isinstance(e, EdgesentError):
            return e
        todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    return seen[-1]


def score_with_ray(artifact: str | os.PathLike, file: str | os.PathLike, out: str | os.PathLike, column: str = "text",
                   model: str | None = None, threads: int | None = None, batch_size: int = 32,
                   workers: int | None = None, address: str | None = None, progress: bool = True,
                   prefix: str = "") -> dict:
    """Score `file` (file, folder or glob) on Ray into parquet shards under the new folder `out`.

    The added columns get `prefix` (as in single-process predict); an input column of the same
    name is refused, never replaced.

    Returns {out, rows, counts, seconds, ray_start_s, workers, threads}. Uses the Ray of this
    process when one is initialised (tests), else joins `address`, else starts a local one.
    """
    from edgesent.runtime import Classifier

    out = Path(out)
    if out.exists():
        raise EdgesentError(f"--out {out} already exists; choose a new folder (with --engine ray it is a folder of shards)")
    check_writable(out.parent if str(out.parent) else Path("."))
    files, kind, filesystem = resolve_inputs(file)
    clf = Classifier(artifact, model=model, threads=1)  # refuses a bad artifact here, with one line
    if filesystem is None:
        names = check_local_inputs(files, kind, column)
        check_columns(Path(files[0]), names, output_columns(clf.labels, prefix), prefix)
    threads = threads or 1
    ray = import_ray()
    if workers is None:
        workers = max(1, (os.cpu_count() or 1) // threads) if not address else None
    ray, started, ray_start_s = start_ray(address, (workers or 1) * threads + 1)
    if workers is None:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1)) // threads)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = ctx.print_on_execution_start = ctx.enable_auto_log_stats = _debug()
        if not _debug():
            logging.getLogger("ray.data").setLevel(logging.ERROR)
            warnings.filterwarnings("ignore", module=r"ray(\.|$)")  # e.g. "operator received 1 input"
        counter = _counter(ray)
        ds = read_dataset(files, kind, column, filesystem).repartition(target_num_rows_per_block=BLOCK_ROWS)
        ds = ds.map_batches(
            Scorer, batch_format="pyarrow", batch_size=None, zero_copy_batch=True, concurrency=workers, num_cpus=threads,
            fn_constructor_kwargs=dict(artifact=str(Path(artifact).resolve()), column=column, model=model,
                                       threads=threads, batch_size=batch_size, counter=counter, prefix=prefix))
        start = time.perf_counter()
        failure: list[BaseException] = []

        def write():
            try:
                ds.write_parquet(str(tmp), filesystem=filesystem)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                failure.append(exc)

        worker = threading.Thread(target=write, daemon=True)
        worker.start()
        _follow(ray, counter, worker, progress)
        if failure:
            cause = _root_cause(failure[0])
            if isinstance(cause, EdgesentError):
                raise cause
            raise DataError(f"scoring {file} on Ray failed: {first_line(cause)}")
        seconds = time.perf_counter() - start
        rows, counts = _tally(tmp, clf.labels, f"{prefix}label", filesystem)
        if rows == 0:
            raise DataError(f"{file} holds no rows to score")
        _rename(tmp, out, filesystem)
    finally:
        _remove(tmp, filesystem)
        if started:
            ray.shutdown()
    return {"out": out, "rows": rows, "counts": counts, "seconds": seconds, "ray_start_s": ray_start_s,
            "workers": workers, "threads": threads, "model_file": clf.model_file}


def _follow(ray, counter, worker: threading.Thread, progress: bool) -> None:
    """Show rows scored and rows/s until the write thread ends."""
    from tqdm import tqdm

    with tqdm(unit="rows", desc="scoring on ray", disable=None if progress else True, file=sys.stderr) as bar:
        while worker.is_alive():
            worker.join(0.5)
            try:
                rows = ray.get(counter.value.remote(), timeout=5)
            except Exception:  # progress only
                continue
            bar.update(rows - bar.n)


def _tally(folder: Path, labels: list[str], label_column: str, filesystem=None) -> tuple[int, dict[str, int]]:
    """Rows and predicted labels, read back from the written shards (the label column only)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    counts = {name: 0 for name in labels}
    try:
        dataset = pads.dataset(str(folder), format="parquet", filesystem=filesystem)
    except (FileNotFoundError, ValueError):
        return 0, counts
    table = dataset.to_table(columns=[label_column])
    for item in pc.value_counts(table.column(label_column)).to_pylist():
        counts[item["values"]] = item["counts"]
    return table.num_rows, counts


def _rename(tmp: Path, out: Path, filesystem=None) -> None:
    if filesystem is None:
        os.replace(tmp, out)
    else:
        filesystem.move(str(tmp), str(out))


def _remove(tmp: Path, filesystem=None) -> None:
    if filesystem is None:
        shutil.rmtree(tmp, ignore_errors=True)
        return
    try:
        filesystem.delete_dir(str(tmp))
    except Exception:
        pass


# --------------------------------------------------------------------------------------------
def predict_ray_cli(artifact, texts: list[str], file=None, column: str = "text", out=None, model: str | None = None,
                    threads: int | None = None, batch_size: int = 32, workers: int | None = None,
                    address: str | None = None, prefix: str = "", overwrite: bool = False) -> None:
    """`edgesent predict --engine ray`: score --file into the folder --out; print one summary line."""
    if overwrite:
        raise EdgesentError("--overwrite does not apply to --engine ray: --out must be a new folder (shards are never mixed)")
    if texts:
        raise EdgesentError("--engine ray scores files: give --file PATH (texts on the command line use the default engine)")
    if not file:
        raise EdgesentError("--engine ray needs --file PATH (a file, a folder or a glob)")
    if not out:
        raise EdgesentError("--engine ray needs --out DIR (a new folder for the parquet shards)")
    import_ray()
    r = score_with_ray(artifact, file, out, column=column, model=model, threads=threads, batch_size=batch_size,
                       workers=workers, address=address, prefix=prefix)
    summary = ", ".join(f"{name} {n}" for name, n in r["counts"].items())
    print(f"scored {r['rows']} rows with {r['model_file']} on ray ({r['workers']} workers x {r['threads']} threads) "
          f"in {r['seconds']:.1f} s ({r['rows'] / max(r['seconds'], 1e-9):.0f} rows/s; ray start "
          f"{r['ray_start_s']:.1f} s): {summary} -> {r['out']}")
