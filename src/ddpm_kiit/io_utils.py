"""Writing outputs so that a crash never leaves a half-written one behind. The one home of `os.replace` in the
package: every file, folder and checkpoint is written aside and renamed into place by the helpers here."""

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def promote(staging: os.PathLike, target: os.PathLike) -> Path:
    """Puts the finished `staging` file or folder at `target` in one rename, replacing what was there."""
    target = Path(target)
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    os.replace(staging, target)
    return target


@contextmanager
def atomic_file(target: os.PathLike) -> Iterator[Path]:
    """
    Yields a path beside `target` to write to; when the block succeeds that file becomes `target`, when it fails it
    is removed and `target` is untouched. (Whether `target` may be replaced is the caller's question, asked before
    the work that produces it.) The partial file keeps `target`'s suffix, so writers that choose a format by it (PIL)
    still do.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.stem}.{os.getpid()}.partial{target.suffix}")
    try:
        yield partial
        promote(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def write_text_atomically(target: os.PathLike, text: str) -> Path:
    with atomic_file(target) as partial:
        partial.write_text(text)
    return Path(target)


def write_json_atomically(target: os.PathLike, value: Any) -> Path:
    return write_text_atomically(target, json.dumps(value, indent=2) + "\n")


@contextmanager
def atomic_directory(target: os.PathLike) -> Iterator[Path]:
    """Yields an empty staging folder beside `target`; when the block succeeds the folder replaces `target`, when it
    fails the folder is removed and `target` is untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    # mkdtemp makes the folder private (0700); the folder it becomes gets the permissions `os.mkdir` would give it.
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    try:
        yield staging
        promote(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
