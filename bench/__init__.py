"""Benchmark scripts, run as modules from the repository root: `.venv/bin/python -m bench.<name>`.

Each script uses only public functions of `edgesent` (session, metrics, machine, artifact,
`edgesent.bench.*`); see bench/README.md for the command behind every figure.
"""
