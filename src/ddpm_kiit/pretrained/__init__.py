"""Pipelines that ship inside the package, so a fresh install makes real images with no training and no network.

Each is a folder written by `examples/train.py` (its model card, README.md, holds the command that trained it and its
measured scores): load one with `KiitDDPMPipeline.from_pretrained(shipped_pipeline("mnist"))`, or name it on the
command line (`ddpm-kiit generate emoji`).
"""

import os
from importlib import resources
from pathlib import Path
from typing import Dict, Optional

SHIPPED = {"mnist": "ddpm-kiit-mnist", "emoji": "ddpm-kiit-emoji"}
DEFAULT_SHIPPED = "mnist"


def shipped_pipeline(name: str = DEFAULT_SHIPPED) -> Path:
    """The folder of the shipped pipeline `name` (one of `SHIPPED`)."""
    if name not in SHIPPED:
        raise ValueError(f"No shipped pipeline called {name!r}; the package ships {sorted(SHIPPED)}.")
    folder = Path(str(resources.files(__name__).joinpath(SHIPPED[name])))
    if not (folder / "model_index.json").is_file():
        raise ValueError(
            f"The shipped pipeline {name!r} is missing from {folder} (an install without package data?). Reinstall "
            "ddpm-kiit, or pass a pipeline folder or Hub id."
        )
    return folder


def shipped_pipelines() -> Dict[str, Path]:
    """Every shipped pipeline that is present, by name."""
    found = {}
    for name in SHIPPED:
        try:
            found[name] = shipped_pipeline(name)
        except ValueError:
            continue
    return found


def resolve_pipeline(path_or_name: Optional[str]) -> str:
    """A pipeline as named on the command line: `None` is the default shipped pipeline, the name of a shipped one is
    its folder (unless a local folder has that name), and anything else (a folder or a Hub id) is returned as is."""
    if path_or_name is None:
        return str(shipped_pipeline())
    if path_or_name in SHIPPED and not os.path.exists(path_or_name):
        return str(shipped_pipeline(path_or_name))
    return path_or_name
