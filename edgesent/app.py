"""A local Gradio app on an artifact: `edgesent demo` (torch-free, like the runtime it wraps).

Layout: a "Review" tab (textbox -> class confidences + inference time, with example reviews), a
"Batch" tab (upload a .csv/.txt, download it scored), and a "Model" panel with manifest facts
(base model, recipe, served file and size, its recorded validation metrics, quantization settings).

Safety and serving decisions:
- It binds 127.0.0.1 unless `--host` says otherwise (any non-loopback host prints a warning that
  the app is reachable from the network), and never creates a public share link (`share=False` is
  hard-coded; there is no flag for it). `--auth user:pass` adds a login. Host and port are checked
  before anything is loaded or printed.
- Upload errors name the uploaded file, never the server's temporary path.
- Uploads are capped (`MAX_FILE_SIZE`) and typed text is capped at `max_chars` both in the
  browser (the textbox refuses more) and on the server (API callers), with a visible note.
- One onnxruntime session serves every request: `InferenceSession.run` is thread-safe. Each run
  uses one intra-op thread and the queue runs up to one request per core in parallel, which keeps
  latency flat under concurrent load instead of oversubscribing the cores with N x cores threads.
- The theme uses system fonts only, so an offline device does not try to fetch web fonts.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edgesent.errors import EdgesentError
from edgesent.runtime import Classifier
from edgesent.scoring import predict_file

MAX_FILE_SIZE = "10mb"
EXAMPLES = [
    "An absolute delight from start to finish: sharp writing, a cast clearly having fun, and an ending that earns its tears.",
    "Two hours I will never get back. The plot makes no sense and the dialogue is painfully wooden.",
    "Gorgeous to look at, but the story drags badly in the middle and the villain is forgettable.",
    "I went in with low expectations and came out grinning. Easily the best comedy of the year.",
    "The lead tries hard, yet the script gives her nothing to work with. Dull, predictable and far too long.",
]


def _facts(clf: Classifier) -> str:
    """Markdown summary of what is being served, from the manifest (missing facts are skipped)."""
    m = clf.manifest
    source = m.get("source") or {}
    recipe = source.get("recipe") or {}
    served = m.get("models", {}).get(clf.model_file, {}) or {}
    size = m["files"].get(clf.model_file, {}).get("bytes")
    rows = [
        ("Served file", f"`{clf.model_file}`" + (f" ({size / 1e6:.1f} MB)" if size else "")),
        ("Precision", served.get("precision")),
        ("Base model", source.get("base_model")),
        ("Recipe", recipe.get("name") if isinstance(recipe, dict) else recipe),
        ("Method", source.get("method")),
        ("Labels", ", ".join(clf.labels)),
        ("Max length", f"{clf.preprocessor.max_length} tokens ({clf.preprocessor.truncation} truncation)"),
    ]
    for key, value in (served.get("metrics") or {}).items():
        if isinstance(value, float):
            value = f"{value:.4f}"
        rows.append((f"Validation {key}", value))
    q = m.get("quantization") or {}
    winner = served.get("quantization") or {}
    if winner:
        keys = ("variant", "format", "per_channel", "excluded_nodes", "calibration_texts")
        rows.append(("Quantization", ", ".join(f"{k}={winner[k]}" for k in keys if k in winner)))
        settings = q.get("settings") or {}
        keys = ("weight_type", "activation_type", "reduce_range", "op_types")
        rows.append(("INT8 settings", ", ".join(f"{k}={settings[k]}" for k in keys if k in settings)))
        for key in ("fp32_accuracy", "int8_accuracy", "drop_points", "eval_size"):
            if q.get(key) is not None:
                value = q[key]
                rows.append((f"Gate {key.replace('_', ' ')}", f"{value:.4f}" if isinstance(value, float) else value))
    rows.append(("Created", m.get("created")))
    body = "\n".join(f"| {name} | {value} |" for name, value in rows if value not in (None, ""))
    return "| | |\n|---|---|\n" + body


def build_app(artifact_dir: str | os.PathLike, model: str | None = None, max_chars: int = 5000,
              engine: str | None = None):
    """The Gradio Blocks for `artifact_dir` (not launched). Endpoints: /predict and /predict_file."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    clf = Classifier(artifact_dir, model=model, threads=1, engine=engine)
    workers = max(2, os.cpu_count() or 2)

    def classify(text: str | None) -> tuple[dict[str, float], str]:
        text = text or ""
        notes = []
        if len(text) > max_chars:
            text = text[:max_chars]
            notes.append(f"input cut to its first {max_chars} characters")
        start = time.perf_counter()
        result = clf.predict([text])[0]
        ms = (time.perf_counter() - start) * 1000
        if result["empty"]:
            notes.append("empty input: the model saw no words, so this guess means nothing")
        info = f"**{result['label']}** ({result['confidence']:.1%}) in {ms:.1f} ms with `{clf.model_file}`"
        return result["probs"], info + ("  \n" + "; ".join(notes) if notes else "")

    def classify_file(path: str | None, column: str) -> str:
        if not path:
            raise gr.Error("upload a .csv or .txt file first")
        name = Path(path).name
        out = Path(tempfile.mkdtemp(prefix="edgesent-")) / f"{Path(path).stem}.predictions.csv"
        try:
            predict_file(clf, path, out, column=(column or "text").strip(), name=name)
        except EdgesentError as exc:  # never show the server's temporary paths
            message = str(exc).replace(str(path), name).replace(str(Path(path).parent), "").replace(str(out), out.name)
            raise gr.Error(message) from None
        return str(out)

    theme = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    with gr.Blocks(title="edgesent demo", analytics_enabled=False) as demo:
        demo.edgesent_theme = theme  # Gradio 6 takes the theme in launch(); see launch_app
        gr.Markdown(f"## Sentiment · `{Path(artifact_dir).name}`\nRuns locally with onnxruntime; nothing leaves this machine.")
        with gr.Tab("Review"):
            with gr.Row():
                with gr.Column(scale=3):
                    text = gr.Textbox(label="Review", lines=6, max_length=max_chars, elem_id="review",
                                      placeholder="Type or paste a review…",
                                      info=f"Up to {max_chars} characters; longer text is cut.")
                    button = gr.Button("Classify", variant="primary", elem_id="classify")
                with gr.Column(scale=2):
                    label = gr.Label(label="Sentiment", num_top_classes=len(clf.labels), elem_id="sentiment")
                    timing = gr.Markdown(elem_id="timing")
            gr.Examples(EXAMPLES, inputs=text, label="Examples")
            event = dict(fn=classify, inputs=text, outputs=[label, timing], concurrency_limit=workers)
            button.click(api_name="predict", **event)
            text.submit(api_visibility="private", **event)  # Enter in the box: same endpoint, not a second API
        with gr.Tab("Batch"):
            gr.Markdown(f"Upload a .csv (with a text column) or a .txt (one review per line), up to {MAX_FILE_SIZE}; "
                        "get it back with label, confidence and per-class probabilities.")
            with gr.Row():
                upload = gr.File(label="Reviews file", file_types=[".csv", ".txt"], type="filepath", elem_id="upload")
                column = gr.Textbox(label="Text column (csv)", value="text", max_lines=1, elem_id="column")
            score = gr.Button("Score file", elem_id="score")
            scored = gr.File(label="Scored csv", elem_id="scored")
            score.click(classify_file, inputs=[upload, column], outputs=scored, api_name="predict_file",
                        concurrency_limit=1)
        with gr.Accordion("Model", open=False):
            gr.Markdown(_facts(clf), elem_id="facts")
    demo.queue(default_concurrency_limit=workers, max_size=256)
    demo.edgesent_classifier = clf
    return demo


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def check_host(host: str, port: int = 0) -> None:
    """One line naming --host when it does not resolve to an address of this machine's families."""
    try:
        socket.getaddrinfo(host, port or None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OverflowError) as exc:
        raise EdgesentError(f"--host {host!r} cannot be resolved ({getattr(exc, 'strerror', None) or exc}); "
                            "use an IP address such as 127.0.0.1 or a name this machine resolves") from None


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except (OSError, ValueError):
            return False


def parse_auth(auth: str | None) -> tuple[str, str] | None:
    if auth is None:
        return None
    user, sep, password = auth.partition(":")
    if not sep or not user or not password:
        raise EdgesentError("--auth must look like user:password")
    return user, password


def launch_app(demo, host: str = "127.0.0.1", port: int = 0, auth: str | None = None,
               prevent_thread_lock: bool = False) -> str:
    """Launch locally (never shared); port 0 picks a free port. Returns the local URL."""
    port = port or free_port(host)
    try:
        demo.launch(server_name=host, server_port=port, share=False, auth=parse_auth(auth),
                    max_file_size=MAX_FILE_SIZE, prevent_thread_lock=prevent_thread_lock, quiet=True,
                    ssr_mode=False, footer_links=["api"], theme=getattr(demo, "edgesent_theme", None),
                    inbrowser=False, show_error=True)
    except OSError as exc:
        raise EdgesentError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    return demo.local_url


def demo_cli(artifact: str | os.PathLike, host: str = "127.0.0.1", port: int = 7860, auth: str | None = None,
             model: str | None = None, engine: str | None = None) -> Any:
    """`edgesent demo`: serve the app until Ctrl-C."""
    from edgesent.quiet import quiet_libraries

    quiet_libraries()
    parse_auth(auth)  # fail before loading anything
    check_host(host, port)
    if not 0 <= port <= 65535:
        raise EdgesentError(f"--port must be between 0 and 65535, got {port}")
    demo = build_app(artifact, model=model, engine=engine)
    port = port or free_port(host)
    loopback = is_loopback(host)
    if not loopback:
        print(f"warning: --host {host} makes the app reachable from the network (anyone who can reach this machine "
              "can use it); keep 127.0.0.1 unless you mean that, and consider --auth", file=sys.stderr, flush=True)
    reach = "this machine only" if loopback else f"every client that can reach {host}"
    print(f"serving {demo.edgesent_classifier.model_file} of {artifact} at http://{host}:{port} "
          f"(reachable from {reach}); Ctrl-C stops", flush=True)
    return launch_app(demo, host=host, port=port, auth=auth)
