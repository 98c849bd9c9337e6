"""Library chatter stays behind `--debug`: one call, `quiet_libraries()`, at the start of every stage.

A user should see edgesent's own progress lines and summaries, not the libraries' logs. Without
`--debug` (the CLI sets EDGESENT_DEBUG=1 for it) this:

- sets the transformers, optimum, onnxruntime, datasets, huggingface_hub, peft, accelerate, torch and
  bitsandbytes loggers to ERROR (bitsandbytes' "Failed to load CPU gemm_4bit_forward" line is a
  warning of `bitsandbytes.backends.cpu.ops`);
- gives the root logger a NullHandler, so a library calling `logging.warning(...)` on the root logger
  (onnxruntime.quantization's four "Please consider to run pre-processing before quantization")
  neither prints through logging's last-resort handler nor triggers `basicConfig`;
- ignores Python warnings (transformers/torch UserWarnings, TracerWarnings, FutureWarnings);
- turns tqdm progress bars off when stderr is not a terminal (nested bars written to a log file
  become escape-code soup): TQDM_DISABLE, HF_HUB_DISABLE_PROGRESS_BARS, datasets' and
  transformers' own switches.

Idempotent and cheap; it imports no heavy library (libraries already imported are switched through
their own API, the others read the environment variables when they load).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

LOGGERS = ("transformers", "optimum", "onnxruntime", "onnx", "datasets", "huggingface_hub", "peft", "accelerate",
           "torch", "bitsandbytes", "nncf", "openvino", "ray", "optuna", "urllib3", "httpx", "gradio")


def debug() -> bool:
    """Whether `--debug` was given (library logs and tracebacks wanted)."""
    return os.environ.get("EDGESENT_DEBUG") == "1"


def interactive() -> bool:
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def quiet_libraries() -> None:
    """Silence library logs, warnings and (off a terminal) progress bars, unless --debug."""
    if debug():
        return
    for library in ("TRANSFORMERS", "HF_HUB", "DATASETS"):  # read when each library configures its logger
        os.environ.setdefault(f"{library}_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    root = logging.getLogger()
    if not any(isinstance(h, logging.NullHandler) for h in root.handlers):
        root.addHandler(logging.NullHandler())
    warnings.simplefilter("ignore")
    if "transformers" in sys.modules:
        sys.modules["transformers"].logging.set_verbosity_error()
    if not interactive():
        os.environ["TQDM_DISABLE"] = "1"
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
        if "datasets" in sys.modules:
            sys.modules["datasets"].disable_progress_bars()
        if "transformers" in sys.modules:
            sys.modules["transformers"].logging.disable_progress_bar()


def quiet_trainer(trainer, metric_names) -> None:
    """Without --debug: no raw `{'loss': ...}` dicts (Trainer's PrinterCallback, or the progress bar's
    log writes); a progress bar on a terminal and one edgesent line per evaluation instead."""
    from transformers import PrinterCallback, ProgressCallback, TrainerCallback

    if debug():
        return

    class Bar(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            pass

    class EvalLine(TrainerCallback):
        shown_steps: set = set()

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if state.is_world_process_zero and metrics and state.global_step not in self.shown_steps:
                self.shown_steps.add(state.global_step)
                shown = ", ".join(f"{k.removeprefix('eval_')} {v:.4f}" for k, v in metrics.items()
                                  if k.removeprefix("eval_") in (*metric_names, "loss") and isinstance(v, float))
                print(f"step {state.global_step}/{state.max_steps} (epoch {state.epoch or 0:.2f}): validation {shown}",
                      file=sys.stderr, flush=True)

    had_bar = trainer.pop_callback(ProgressCallback) is not None
    trainer.remove_callback(PrinterCallback)
    if had_bar:
        trainer.add_callback(Bar())
    trainer.add_callback(EvalLine())
