"""Model cards for saved pipelines, rendered from the templates in `model_cards/`."""

import os
from importlib import resources
from pathlib import Path
from typing import Dict, Optional

from huggingface_hub import ModelCard, ModelCardData

from .io_utils import atomic_file

SCHEDULE_FLAW = (
    "The noise schedule is the talk's (T = {T}, betas {start:g} to {end:g}): alpha_bar_T = {alpha_bar_T:.3f}, so x_T "
    "is not pure noise and sampling starts from a state the model never saw in training. Retrain with "
    "`rescale_betas_zero_snr=True` or `beta_schedule='squaredcos_cap_v2'` to remove the mismatch."
)

# Above this alpha_bar at T - 1, x_T is not pure noise: the card states SCHEDULE_FLAW.
NOT_PURE_NOISE_ALPHA_BAR = 0.01


def _terminal_alpha_bar(scheduler) -> Optional[float]:
    """alpha_bar at the last timestep, as the noise scheduler answers it (`terminal_alpha_bar`). A stock Diffusers
    scheduler swapped in (DDIM and the like) has DDPM's config keys, so ours answers for the same schedule; a blur
    scheduler has no alpha_bar (None)."""
    if hasattr(scheduler, "terminal_alpha_bar"):
        return scheduler.terminal_alpha_bar
    if "beta_start" not in scheduler.config:
        return None
    from .schedulers import KiitDDPMScheduler

    try:
        return KiitDDPMScheduler.from_config(scheduler.config).terminal_alpha_bar
    except ValueError:  # a schedule ours does not build
        return None


def _describe_unet(unet) -> str:
    config = unet.config
    parts = [f"{config.norm_type} norm", f"widths {tuple(config.block_out_channels)}"]
    if config.get("block_type", "simple") == "residual":
        parts.insert(0, "residual blocks")
    if config.attention_type == "self_attention":
        parts.append(f"self-attention at the {config.attention_placement}")
    elif config.attention_type == "cbam":
        parts.append(f"CBAM in every block and self-attention at the {config.attention_placement}")
    if config.get("attention_resolutions"):
        sizes = ", ".join(f"{r}x{r}" for r in config.attention_resolutions)
        parts.append(f"{config.num_attention_heads}-head self-attention at {sizes}")
    if config.get("cbam_placement"):
        where = config.cbam_placement.replace("_", " ")
        sizes = config.get("cbam_resolutions")
        parts.append(f"CBAM on the {where}" + (f" at {sizes}" if sizes else " of every block"))
    if config.get("skip_attention_gates"):
        with_time = config.skip_attention_gates == "decoder_time"
        parts.append("attention gates on the skips, gated by the decoder" + (" and the time" if with_time else ""))
    if config.get("skip_conv_in"):
        parts.append("full-resolution skip")
    if config.get("num_class_embeds"):
        parts.append(f"a class embedding of {config.num_class_embeds} classes and the null label")
    if config.get("cross_attention_dim"):
        sizes = "".join(f"{r}x{r} and " for r in config.get("cross_attention_resolutions") or ())
        parts.append(f"cross-attention to {config.cross_attention_dim}-wide text states at {sizes}the bottleneck")
    return ", ".join(parts)


def _variant_name(config) -> str:
    """The card's short name of the model: `improved` for the residual GroupNorm backbone, else the talk's
    variant (`simple`, `self_attention`, `cbam`)."""
    if config.get("block_type", "simple") == "residual":
        return "improved"
    return config.attention_type or "simple"


UNCONDITIONAL = "Unconditional: there is no way to ask for a given class or prompt."
NOT_RECORDED = (
    "This pipeline was saved with `save_pretrained` outside `ddpm-kiit train`, so its training command was not "
    "recorded."
)


def _describe_scheduler(config) -> str:
    if "sigma_max" in config:  # ColdDiffusionScheduler, BlurringDiffusionScheduler, or an old GaussianBlurScheduler
        # An old config names its `process`; each new class has its own prediction type.
        cold = config.process == "cold" if "process" in config else config.prediction_type == "sample"
        process = (
            f"cold diffusion (Bansal et al. 2022), {config.sampler} sampler"
            if cold
            else "blurring diffusion (Hoogeboom & Salimans 2022)"
        )
        return (
            f"T = {config.num_train_timesteps}, Gaussian blur from {config.sigma_min:g} to {config.sigma_max:g} px "
            f"({config.blur_schedule}), {process}, predicting {config.prediction_type}"
        )
    rescaled = " rescaled to zero terminal SNR" if config.get("rescale_betas_zero_snr") else ""
    return (
        f"T = {config.num_train_timesteps}, {config.beta_schedule} betas {config.beta_start:g} to "
        f"{config.beta_end:g}{rescaled}, predicting {config.prediction_type}"
    )


def _conditioning(pipe) -> tuple:
    """The Hub task of a pipeline, the arguments of the card's example call, what it cannot do, and what it is."""
    config = pipe.unet.config
    if getattr(config, "cross_attention_dim", None) is not None:
        return "text-to-image", '"red apple", num_images_per_prompt=4', [], "A text-to-image pipeline"
    num_classes = getattr(config, "num_class_embeds", None)
    if num_classes is not None:
        example = f"class_labels=[{min(7, num_classes - 1)}] * 4, batch_size=4"
        limits = [f"It draws one of {num_classes} classes; no prompts."]
        described = f"A class-conditional image generation pipeline ({num_classes} classes, classifier-free guidance)"
        return "unconditional-image-generation", example, limits, described
    return (
        "unconditional-image-generation",
        "batch_size=4",
        [UNCONDITIONAL],
        "An unconditional image generation pipeline",
    )


def _is_hub_id(name: str) -> bool:
    """Whether `name` reads as a Hub repository id (`owner/name`) rather than a local folder or a shipped name."""
    return name.count("/") == 1 and not os.path.exists(name) and not name.startswith((".", "/"))


def render_model_card(
    pipe,
    training_command: str = NOT_RECORDED,
    repo_id_or_path: str = "path/to/this/folder",
    hyperparameters: Optional[Dict] = None,
    sample_grid: Optional[str] = None,
    quality: Optional[str] = None,
    datasets=None,
    license: str = "apache-2.0",
    variant: Optional[str] = None,
    distilled_from: Optional[Dict] = None,
) -> ModelCard:
    """A model card for a pipeline of ours: metadata the Hub validates, usage, training, samples, limitations.
    `variant` names the weights' variant (`"fp16"`), which the usage snippets then load. `distilled_from` (`teacher`,
    `method`, `steps`) describes a distilled student: the card names its teacher, and a teacher on the Hub becomes
    its `base_model`."""
    unet, scheduler = pipe.unet, pipe.scheduler
    model_variant = _variant_name(unet.config)
    task, call_arguments, limitations, task_description = _conditioning(pipe)
    card_data = ModelCardData(
        library_name="diffusers",
        pipeline_tag=task,
        license=license,
        tags=["ddpm", "ddpm_kiit", f"ddpm_kiit-{model_variant}", task] + (["distillation"] if distilled_from else []),
        datasets=datasets,
    )
    if distilled_from and _is_hub_id(distilled_from["teacher"]):
        card_data.base_model = distilled_from["teacher"]
    sconfig = scheduler.config
    alpha_bar_T = _terminal_alpha_bar(scheduler)
    if alpha_bar_T is not None and alpha_bar_T > NOT_PURE_NOISE_ALPHA_BAR:
        limitations.append(
            SCHEDULE_FLAW.format(
                T=sconfig.num_train_timesteps, start=sconfig.beta_start, end=sconfig.beta_end, alpha_bar_T=alpha_bar_T
            )
        )
    if unet.config.norm_type == "batch":
        limitations.append(
            "BatchNorm running statistics average over all noise levels, so eval-mode outputs differ from what "
            "training optimised; `norm_type='group'` avoids this."
        )
    from . import __version__
    from .remote_code import code_files

    template = resources.files("ddpm_kiit.model_cards").joinpath("kiit_ddpm.md")
    with resources.as_file(template) as template_path:
        return ModelCard.from_template(
            card_data,
            template_path=str(template_path),
            title=f"ddpm-kiit {model_variant} SimpleUNet",
            call_arguments=call_arguments,
            task_description=task_description,
            load_arguments=f', variant="{variant}"' if variant else "",
            model_class=type(unet).__name__,
            variant_description=_describe_unet(unet),
            num_parameters=f"{sum(p.numel() for p in unet.parameters()):,}",
            in_channels=unet.config.in_channels,
            sample_size=unet.config.sample_size,
            scheduler_class=type(scheduler).__name__,
            scheduler_description=_describe_scheduler(sconfig),
            repo_id_or_path=repo_id_or_path,
            training_command=training_command,
            hyperparameters=hyperparameters,
            sample_grid=sample_grid,
            quality=quality,
            limitations=limitations,
            code_files=list(code_files(pipe)),
            ddpm_kiit_version=__version__,
            distilled_from=distilled_from,
        )


def write_model_card(pipe, save_directory: os.PathLike, training_command: str = NOT_RECORDED, **kwargs) -> Path:
    """Renders the card and writes it as `README.md` in `save_directory`, beside the weights."""
    path = Path(save_directory) / "README.md"
    render_model_card(pipe, training_command, **kwargs).save(path)
    return path


def push_folder(
    folder: os.PathLike,
    repo_id: str,
    token: Optional[str] = None,
    private: Optional[bool] = None,
    commit_message: Optional[str] = None,
    create_pr: bool = False,
) -> str:
    """Uploads a saved pipeline folder (weights, configs, card, sample grid) to the Hub; checkpoints and logs stay.
    The one push path: `ddpm-kiit push`, `train --push_to_hub` and `KiitDDPMPipeline.push_to_hub` all end here.

    Returns the URL of the commit. A rejected repo id, a missing or invalid token, or an unreachable Hub raise a
    `ValueError` that says what failed; the local folder is never modified.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    folder = Path(folder)
    if not (folder / "model_index.json").is_file():
        raise ValueError(f"{str(folder)!r} is not a saved pipeline folder (no model_index.json); nothing to push.")
    api = HfApi(token=token)
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo.repo_id,
            folder_path=str(folder),
            ignore_patterns=["checkpoint-*", "checkpoint-*/**", ".*", "logs/**", "samples/**", "train_summary.json"],
            commit_message=commit_message or "Upload ddpm-kiit pipeline",
            create_pr=create_pr,
        )
    except HfHubHTTPError as error:
        status = getattr(error.response, "status_code", None)
        hint = {
            401: "the Hub needs a valid token: pass --hub_token or run `hf auth login`",
            403: f"the Hub refused to create or write {repo_id!r}: check the namespace and your token's permissions",
            404: f"the repository {repo_id!r} was not found",
        }.get(status, "see the Hub's message above")
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(
            f"Pushing {str(folder)!r} to {repo_id!r} failed ({first_line}): {hint}. The local files are unchanged; "
            f"push them later with `ddpm-kiit push {folder} {repo_id}`."
        ) from error
    except OSError as error:
        raise ValueError(
            f"Pushing {str(folder)!r} to {repo_id!r} failed: the Hub could not be reached ({error}). The local files "
            f"are unchanged; push them later with `ddpm-kiit push {folder} {repo_id}`."
        ) from error
    return info.commit_url


def quality_markdown(report: Dict) -> str:
    """A `ddpm-kiit evaluate` report as the card's quality paragraph: scores beside the real-vs-real floor."""
    scores, floor = report["scores"], report["floor"]
    rows = ["| metric | model | real vs real |", "|---|---|---|"]
    for key in ("fid", "kid_mean", "precision", "recall"):
        rows.append(f"| {key} | {scores[key]:.4g} | {floor[key]:.4g} |")
    rows.append(f"| copy_fraction | {scores['copy_fraction']:.3g} | |")
    return (
        f"Measured with `{report.get('command', 'ddpm-kiit evaluate')}`: n = {report['num_samples']} samples "
        f"({report['scheduler']}, {report['num_inference_steps'] or 'all'} steps) against held-out "
        f"{report['dataset']} images, {report['features']} features.\n\n" + "\n".join(rows)
    )


def _replace_section(text: str, title: str, section: str) -> str:
    """`text` with its `## title` section (up to the next `## `) replaced by `section`, or `section` added."""
    import re

    pattern = rf"^## {re.escape(title)}\n.*?(?=^## |\Z)"
    if re.search(pattern, text, re.M | re.S):
        return re.sub(pattern, lambda _: section, text, count=1, flags=re.M | re.S)
    return text + "\n" + section


def update_card_usage(
    folder: os.PathLike, pipe, repo_id_or_path: Optional[str] = None, variant: Optional[str] = None
) -> Path:
    """Replaces the description, the `## Usage` and the `## Limitations` sections of the card in `folder` with the
    current template's, for `pipe` (and weights of `variant`: by default the folder's, where its unet has only
    variant weights), keeping the rest (training command, samples, quality). `repo_id_or_path` defaults to the one
    the card's snippet loads."""
    import re

    from .pipelines.pipeline_kiit_ddpm import only_variant

    path = Path(folder) / "README.md"
    if not path.is_file():
        raise ValueError(f"{str(path)!r} does not exist: only pipeline folders with a model card can be updated.")
    card = ModelCard.load(path)
    if repo_id_or_path is None:
        found = re.search(r'from_pretrained\("([^"]+)"', card.text)
        repo_id_or_path = found.group(1) if found else "path/to/this/folder"
    variant = variant or only_variant(folder)
    fresh = render_model_card(pipe, repo_id_or_path=repo_id_or_path, variant=variant).text
    for title in ("Usage", "Limitations"):
        section = re.search(rf"^## {title}\n.*?(?=^## |\Z)", fresh, re.M | re.S).group(0).rstrip("\n") + "\n\n"
        card.text = _replace_section(card.text, title, section)
    # The title and the description above the first section, which name what the pipeline is.
    card.text = fresh[: fresh.index("## Usage")] + card.text[card.text.index("## Usage") :].rstrip("\n") + "\n"
    with atomic_file(path) as partial:
        card.save(partial)
    return path


def update_card_quality(folder: os.PathLike, report: Dict) -> Path:
    """Replaces (or adds) the `## Quality` section of the card in `folder` with `report`, keeping the rest."""
    import re

    path = Path(folder) / "README.md"
    if not path.is_file():
        raise ValueError(f"{str(path)!r} does not exist: only pipeline folders with a model card can be updated.")
    card = ModelCard.load(path)
    section = f"## Quality\n\n{quality_markdown(report)}\n\n"
    text = card.text
    if re.search(r"^## Quality\n", text, re.M):
        text = re.sub(r"^## Quality\n.*?(?=^## |\Z)", section, text, flags=re.M | re.S)
    elif "## Limitations" in text:
        text = text.replace("## Limitations", section + "## Limitations", 1)
    else:
        text = text + "\n" + section
    card.text = text
    with atomic_file(path) as partial:
        card.save(partial)
    return path
