"""Pipelines that ship inside the package, so a fresh install makes real images with no training and no network.

Each is a folder written by `examples/train.py` (its model card, README.md, holds the command that trained it and its
measured scores): load one with `KiitDDPMPipeline.from_pretrained(shipped_pipeline("mnist"))`, or name it on the
command line (`ddpm-kiit generate emoji`; `ddpm-kiit generate mnist --class 7` draws from `mnist-class`, and
`ddpm-kiit generate --fast` from `mnist-fast`, the student that `ddpm-kiit distill` made of `mnist`, in 4 steps;
`mnist-2-step` is one more round of distillation on `mnist-fast`, in 2 steps).
"""

import os
from importlib import resources
from pathlib import Path
from typing import Dict, Optional

SHIPPED = {
    "mnist": "ddpm-kiit-mnist",
    "emoji": "ddpm-kiit-emoji",
    "mnist-class": "ddpm-kiit-mnist-class",
    "emoji-text": "ddpm-kiit-emoji-text",
    "mnist-fast": "ddpm-kiit-mnist-fast",
    "mnist-2-step": "ddpm-kiit-mnist-2-step",
}
DEFAULT_SHIPPED = "mnist"
# What the app shows first: a distilled student draws a grid in a few steps, where its teacher takes hundreds.
QUICK_PREVIEW_SHIPPED = "mnist-fast"


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


def resolve_pipeline(
    path_or_name: Optional[str], class_label: Optional[int] = None, prompt: Optional[str] = None, fast: bool = False
) -> str:
    """A pipeline as named on the command line: `None` is the default shipped pipeline, the name of a shipped one is
    its folder (unless a local folder has that name), and anything else (a folder or a Hub id) is returned as is.
    A shipped name asked for a class or a prompt means its class-conditional or text-to-image sibling where one
    ships: `mnist` with `class_label` is `mnist-class`, `emoji` with `prompt` is `emoji-text`. `fast` asks for the
    distilled few-step sibling (`mnist` is `mnist-fast`), refused where none ships."""
    if path_or_name is None:
        path_or_name = DEFAULT_SHIPPED
    elif path_or_name not in SHIPPED or os.path.exists(path_or_name):
        if fast:
            raise ValueError(
                f"--fast picks the distilled sibling of a shipped pipeline, and {path_or_name!r} is not one; a "
                "student folder that `ddpm-kiit distill` wrote samples in its few steps without --fast."
            )
        return path_or_name
    if fast:
        if class_label is not None or prompt is not None:
            raise ValueError(
                "No distilled class-conditional or text-to-image pipeline ships yet (`ddpm-kiit distill` takes "
                "unconditional teachers); drop --fast, or drop --class/--prompt."
            )
        base = path_or_name[: -len("-fast")] if path_or_name.endswith("-fast") else path_or_name
        if f"{base}-fast" not in SHIPPED:
            fast_ones = sorted(name[: -len("-fast")] for name in SHIPPED if name.endswith("-fast"))
            raise ValueError(f"No distilled sibling of {path_or_name!r} ships; --fast works for {fast_ones}.")
        return str(shipped_pipeline(f"{base}-fast"))
    suffix = "text" if prompt is not None else "class" if class_label is not None else None
    if suffix is not None and f"{path_or_name}-{suffix}" in SHIPPED:
        path_or_name = f"{path_or_name}-{suffix}"
    return str(shipped_pipeline(path_or_name))


def package_pipeline(
    trained_folder: os.PathLike,
    name: str,
    command_chain: str = "",
    commands_before: str = "",
    default_num_inference_steps: Optional[int] = None,
    scheduler: Optional[str] = None,
) -> Path:
    """For maintainers: puts a pipeline folder that `examples/train.py` (or `ddpm-kiit distill`) wrote into the package
    as the shipped pipeline `name` (a key of `SHIPPED`): the unet (and a text encoder) in half precision (Diffusers'
    `variant="fp16"` safetensors; `KiitDDPMPipeline.from_pretrained` loads the unet's in float32), the scheduler, the
    tokenizer, the generated code, and the trained folder's model card (`command_chain`, the commands after training,
    added to the first command block of its Training section, and `commands_before`, those that made the run's input,
    such as a distilled student's teacher, put first in it), sample grid and `train_summary.json` or
    `distill_summary.json`. Checkpoints and logs stay behind. The folder is replaced in one rename.

    `default_num_inference_steps` replaces a distilled student's default step count (the count it was trained for)
    where another was measured better, and says so in its card. `scheduler` (a name in `ddpm_kiit.sampling.SCHEDULERS`,
    with `default_num_inference_steps`) ships the pipeline with that sampler as its own instead of the one it was
    trained with, where that one measured better on its weights; the card says so and how to sample with the other."""
    import json
    import shutil

    from ..hub import update_card_usage
    from ..io_utils import atomic_directory
    from ..pipelines import KiitDDPMPipeline

    if name not in SHIPPED:
        raise ValueError(f"Add {name!r} to `SHIPPED` first (with its folder name), then package it.")
    trained = Path(trained_folder)
    pipe = KiitDDPMPipeline.from_pretrained(trained)
    trained_steps = pipe.config.get("default_num_inference_steps")
    trained_scheduler = type(pipe.scheduler).__name__
    if scheduler is not None:
        from ..sampling import swap_scheduler

        if default_num_inference_steps is None:
            raise ValueError(f"Pass `default_num_inference_steps`, the step count {scheduler!r} was measured at.")
        swap_scheduler(pipe, scheduler)
        pipe.register_to_config(default_num_inference_steps=default_num_inference_steps)
    elif default_num_inference_steps is not None:
        if trained_steps is None:
            raise ValueError(f"{trained} is not a distilled student (no default_num_inference_steps to replace).")
        pipe.register_to_config(default_num_inference_steps=default_num_inference_steps)
    grid = None
    if scheduler is not None or default_num_inference_steps not in (None, trained_steps):
        # The card's grid shows what the new default draws.
        import torch

        from ..visualize import image_grid

        pipe.set_progress_bar_config(disable=True)
        grid = image_grid(pipe(batch_size=16, generator=torch.manual_seed(0)).images)
    pipe.unet.half()
    if getattr(pipe, "text_encoder", None) is not None:
        pipe.text_encoder.half()
    with atomic_directory(Path(str(resources.files(__name__).joinpath(SHIPPED[name])))) as staging:
        pipe.save_pretrained(staging, variant="fp16")
        for config_file in [staging / "model_index.json", *staging.glob("*/config.json")]:
            # Diffusers records the folder a model was loaded from; here that is a path on the maintainer's disk.
            config = json.loads(config_file.read_text(encoding="utf-8"))
            if config.pop("_name_or_path", None) is not None:
                config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        for entry in ("README.md", "samples.png", "train_summary.json", "distill_summary.json"):
            if (trained / entry).is_file():
                shutil.copy2(trained / entry, staging / entry)
        if grid is not None:
            grid.save(staging / "samples.png")
        card = staging / "README.md"
        text, section, fence = card.read_text(encoding="utf-8"), "## Training\n", "```bash\n"
        if (command_chain or commands_before) and section in text and fence in text[text.index(section) :]:
            start = text.index(fence, text.index(section)) + len(fence)
            end = text.index("```", start)
            before = commands_before.rstrip() + "\n" if commands_before else ""
            after = command_chain.rstrip() + "\n" if command_chain else ""
            card.write_text(text[:start] + before + text[start:end] + after + text[end:], encoding="utf-8")
        if scheduler is None and default_num_inference_steps not in (None, trained_steps):
            steps = default_num_inference_steps
            text, said = card.read_text(encoding="utf-8"), f"it samples in {trained_steps} steps by default ("
            if said not in text:
                raise ValueError(f"The card of {trained} does not say {said!r}; package it without a new default.")
            now = f"it samples in {steps} steps by default (trained for {trained_steps}, it measured better at "
            now += f"{steps}; "
            card.write_text(text.replace(said, now), encoding="utf-8")
        if scheduler is not None:
            # In the Training section, beside a student's step count: `update_card_usage` (also run by
            # `refresh_saved_folder`) renders the description and Usage afresh and keeps this section.
            text = card.read_text(encoding="utf-8")
            if section not in text:
                raise ValueError(f"The card of {trained} has no Training section to say its sampler in.")
            steps = pipe.scheduler.config.num_train_timesteps
            said = (
                f"It samples with `{type(pipe.scheduler).__name__}` (`{scheduler}` in ddpm-kiit's commands) in "
                f"{default_num_inference_steps} steps by default: on these weights it measured better than the "
                f"`{trained_scheduler}` the model was trained with (ddpm-kiit's docs/shipped.md has both scores). To "
                f"sample with that one, `import ddpm_kiit` and set `pipe.scheduler = {trained_scheduler}.from_config("
                f"pipe.scheduler.config)` with `num_inference_steps={steps}`"
            )
            said += (
                f" (`--scheduler kiit --steps {steps}` on the command line)"
                if trained_scheduler == "KiitDDPMScheduler"
                else ""
            )
            card.write_text(text.replace(section, f"{section}\n{said}.\n", 1), encoding="utf-8")
        update_card_usage(staging, pipe, f"src/ddpm_kiit/pretrained/{SHIPPED[name]}", variant="fp16")
    return Path(str(resources.files(__name__).joinpath(SHIPPED[name])))
