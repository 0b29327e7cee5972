"""Packing helpers of benchmarks/gpu_study.sh, which must bring its results back in a few small files.

python benchmarks/gpu_pack.py best RESULTS.json       # prints the best scored MNIST row of the improved backbone
python benchmarks/gpu_pack.py fp16 PIPELINE_DIR ...   # strips checkpoints, stores each unet in fp16
python benchmarks/gpu_pack.py fp32 PIPELINE_DIR ...   # back here: restores fp32 unet weights from the fp16 file
python benchmarks/gpu_pack.py ema16 CHECKPOINT_DIR ... # keeps only a checkpoint's EMA unet (unet_ema/), in fp16
"""

import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

WEIGHTS = "diffusion_pytorch_model.safetensors"


def best_mnist_row(results_path: str) -> str:
    rows = json.loads(Path(results_path).read_text())["rows"].values()
    scored = [r for r in rows if r["dataset"] == "mnist" and "eval" in r and r["row"].startswith("improved")]
    return min(scored, key=lambda r: r["eval"]["scores"]["fid"])["row"] if scored else ""


def _save_half(weights: Path, target: Path):
    save_file({k: v.half() for k, v in load_file(str(weights)).items()}, str(target))


def to_fp16(folder: Path):
    for junk in [*folder.glob("checkpoint-*"), folder / "logs", folder / "samples"]:
        shutil.rmtree(junk, ignore_errors=True)
    weights = folder / "unet" / WEIGHTS
    if weights.is_file():
        _save_half(weights, weights.with_name("fp16.safetensors"))
        weights.unlink()


def to_fp32(folder: Path):
    half = folder / "unet" / "fp16.safetensors"
    save_file({k: v.to(torch.float32) for k, v in load_file(str(half)).items()}, str(half.with_name(WEIGHTS)))
    half.unlink()


def ema_to_fp16(checkpoint: Path):
    """What benchmarks/fid_vs_hours.py reads of a checkpoint, at half the bytes: its EMA unet's config and weights.
    The optimizer, the live weights and the RNG states stay behind, so the checkpoint cannot be resumed from."""
    for item in checkpoint.iterdir():
        if item.name != "unet_ema":
            shutil.rmtree(item) if item.is_dir() else item.unlink()
    weights = checkpoint / "unet_ema" / WEIGHTS
    _save_half(weights, weights)


if __name__ == "__main__":
    command, *paths = sys.argv[1:]
    if command == "best":
        print(best_mnist_row(paths[0]))
    else:
        for path in paths:
            {"fp16": to_fp16, "fp32": to_fp32, "ema16": ema_to_fp16}[command](Path(path))
