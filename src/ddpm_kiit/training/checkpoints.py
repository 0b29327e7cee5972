"""Checkpoints of a training run: written aside and renamed (a kill never leaves half of one), pruned, resumed."""

import json
import shutil
from pathlib import Path
from typing import Callable, List, Optional

import torch
from diffusers.utils import SAFETENSORS_WEIGHTS_NAME

from ..io_utils import promote
from ..models import SimpleUNet2DModel

STATE_FILE = "training_state.json"
# The counters `EMAModel.save_pretrained` writes into its config beside the weights.
_EMA_COUNTERS = (
    "decay", "min_decay", "optimization_step", "update_after_step", "use_ema_warmup", "inv_gamma", "power",
)  # fmt: skip


def list_checkpoints(output_dir: Path) -> List[Path]:
    """The `checkpoint-<step>` folders of a run, oldest step first."""
    checkpoints = [p for p in output_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(checkpoints, key=lambda p: int(p.name.split("-")[-1]))


def latest_checkpoint(output_dir: Path) -> Optional[Path]:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def weights_checksum(model) -> torch.Tensor:
    """A float64 fingerprint of every parameter and buffer, to check that data-parallel processes agree."""
    total = torch.zeros((), dtype=torch.float64, device=next(model.parameters()).device)
    for index, tensor in enumerate(model.state_dict().values()):
        if tensor.is_floating_point():
            total += (index + 1) * tensor.double().sum()
    return total


def save_checkpoint(
    accelerator,
    unet,
    ema_model,
    output_dir: Path,
    global_step: int,
    limit: Optional[int],
    extra_state: Optional[Callable[[Path], None]] = None,
) -> Path:
    """Writes `checkpoint-<step>` through a temporary folder, so a kill at any moment keeps the previous one intact.

    Its `training_state.json` holds the step and each process's weight checksum (they must all be equal).
    `extra_state(folder)`, on the main process, writes what else a run needs to resume (a distillation's teacher)
    into the folder before it becomes the checkpoint.
    """
    checksums = accelerator.gather(weights_checksum(accelerator.unwrap_model(unet))[None]).tolist()
    final = output_dir / f"checkpoint-{global_step}"
    partial = output_dir / f".checkpoint-{global_step}.partial"
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial), safe_serialization=True)
    if accelerator.is_main_process:
        if ema_model is not None:
            ema_model.save_pretrained(str(partial / "unet_ema"))  # safetensors, not a pickle
        if extra_state is not None:
            extra_state(partial)
        state = {
            "global_step": global_step,
            "num_processes": accelerator.num_processes,
            "weights_checksums": checksums,
        }
        (partial / STATE_FILE).write_text(json.dumps(state))
        promote(partial, final)
        if limit is not None:
            for old in list_checkpoints(output_dir)[:-limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def load_ema_unet(folder: Path, model_cls=SimpleUNet2DModel):
    """The unet that `EMAModel.save_pretrained` wrote to `folder` (a checkpoint's `unet_ema/`), with the EMA weights,
    as a `model_cls`. Its config also holds the EMA counters; they are left out instead of being passed to the model,
    which would warn about each."""
    from safetensors.torch import load_file

    config = model_cls.load_config(folder)
    unet = model_cls.from_config({k: v for k, v in config.items() if k not in _EMA_COUNTERS})
    unet.load_state_dict(load_file(str(Path(folder) / SAFETENSORS_WEIGHTS_NAME)))
    return unet


def load_ema(ema_model, folder: Path, device, model_cls=SimpleUNet2DModel) -> None:
    """Restores EMA weights and counters saved by `EMAModel.save_pretrained` (safetensors plus config keys)."""
    config = model_cls.load_config(folder)
    state = {key: config[key] for key in _EMA_COUNTERS}
    state["shadow_params"] = [p.detach().clone() for p in load_ema_unet(folder, model_cls).parameters()]
    ema_model.load_state_dict(state)
    ema_model.to(device)


def checkpoint_path(output_dir: Path, where: str) -> Path:
    """The checkpoint `where` names: a folder, or "latest" (the newest in `output_dir`)."""
    return latest_checkpoint(output_dir) if where == "latest" else Path(where)


def resume(accelerator, ema_model, output_dir: Path, where: str, device, model_cls=SimpleUNet2DModel) -> int:
    """Loads the checkpoint `where` names (see `checkpoint_path`); returns its step."""
    path = checkpoint_path(output_dir, where)
    accelerator.load_state(str(path))
    global_step = json.loads((path / STATE_FILE).read_text())["global_step"]
    if ema_model is not None:
        load_ema(ema_model, path / "unet_ema", device, model_cls)
    accelerator.print(f"Resumed from {path} at step {global_step}")
    return global_step
