"""Command-line flags of `examples/train.py`, named as in Diffusers' `train_unconditional.py`, and their checks."""

import argparse
import dataclasses
import inspect
import json
import os
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import List, Optional, Union

from ..devices import default_mixed_precision
from ..models.unet_simple import IMPROVED_CONFIG, SEED_VARIANTS, SimpleUNet2DModel
from .checkpoints import latest_checkpoint, list_checkpoints  # noqa: F401 (their old home)
from .conditioning import CONDITIONINGS

# The model `accelerate launch examples/train.py` trains with no flags: the improved model (GroupNorm residual
# blocks, a scale-and-shift time embedding, the full-resolution skip the talk's U-Net drops, time-gated attention
# gates on the skips). Why this one: docs/placement-study.md and docs/training.md, with the commands that measured it.
DEFAULT_MODEL_CONFIG = dict(IMPROVED_CONFIG)
# --model_variant: the talk's three models, and the improved one (`IMPROVED_CONFIG`).
MODEL_VARIANTS = {**SEED_VARIANTS, "improved": IMPROVED_CONFIG}
DEFAULT_DATASET = "mnist"
# The main job's length, chosen so that the learning rate's cosine decay ends inside a short CPU run; how long it
# takes as typed is measured by benchmarks/main_job.py (docs/training.md).
DEFAULT_MAX_TRAIN_STEPS = 3800
SCHEDULER_CHOICES = ("kiit", "gaussian_blur", "blurring_diffusion")
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py", description="Train a SimpleUNet DDPM with Accelerate (`accelerate launch examples/train.py`)."
    )
    _add_data_flags(parser.add_argument_group("data"))
    _add_model_flags(parser.add_argument_group("model and noise"))
    _add_conditioning_flags(parser.add_argument_group("conditioning"))
    _add_optimisation_flags(parser.add_argument_group("optimisation"))
    _add_output_flags(parser.add_argument_group("outputs"))
    return parser


def _add_data_flags(data) -> None:
    data.add_argument(
        "--dataset_name", default=None, help=f"Built-in name, saved dataset or Hub id (default: {DEFAULT_DATASET})."
    )
    data.add_argument("--dataset_config_name", default=None)
    data.add_argument("--train_data_dir", default=None, help="A folder of images (imagefolder) or a saved dataset.")
    data.add_argument("--image_column", default="image")
    data.add_argument("--cache_dir", default=None, help="Where built-in datasets are cached.")
    data.add_argument("--resolution", type=int, default=32)
    data.add_argument("--center_crop", action="store_true")
    data.add_argument("--random_flip", action="store_true")
    data.add_argument(
        "--skip_bad_images",
        action="store_true",
        help="Train without the images that cannot be read (truncated, corrupt) instead of stopping on them.",
    )
    data.add_argument("--max_train_samples", type=int, default=None, help="Use only the first N training images.")


def _add_model_flags(model) -> None:
    model.add_argument(
        "--model_variant",
        choices=sorted(MODEL_VARIANTS),
        default=None,
        help="One of the talk's models (simple, self_attention, cbam) or the improved one; --model_config overrides.",
    )
    model.add_argument("--model_config", default=None, help="JSON string or file of SimpleUNet2DModel overrides.")
    model.add_argument(
        "--pretrained_model_name_or_path",
        default=None,
        help="Fine-tune: start from the unet of this pipeline (a folder, a Hub id or a shipped name such as mnist) "
        "instead of a new one. Its config is the model's, so --model_variant and --model_config do not apply.",
    )
    model.add_argument("--channels_last", action="store_true", help="Use the channels_last memory format.")
    model.add_argument(
        "--scheduler",
        choices=SCHEDULER_CHOICES,
        default="kiit",
        help="kiit: the talk's DDPM (noise); gaussian_blur: cold diffusion; blurring_diffusion: blur plus noise.",
    )
    model.add_argument(
        "--scheduler_config", default=None, help="JSON object of extra scheduler settings, e.g. '{\"sigma_max\": 6}'."
    )
    model.add_argument("--ddpm_num_steps", type=int, default=300)
    # Default: the talk's linear betas rescaled to zero terminal SNR, with v-prediction (Lin et al. 2024). Measured
    # against the cosine schedule and the talk's own at 1,000 steps: FID 177.8 vs 235.6 vs 292.9
    # (benchmarks/schedule_flaw.py, n = 2,000).
    model.add_argument(
        "--ddpm_beta_schedule", default="linear", choices=("linear", "scaled_linear", "squaredcos_cap_v2")
    )
    model.add_argument(
        "--rescale_betas_zero_snr",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Rescale the betas so that the last timestep is pure noise (--no-rescale_betas_zero_snr: the talk's).",
    )
    model.add_argument("--prediction_type", default="v_prediction", choices=("epsilon", "sample", "v_prediction"))
    model.add_argument("--loss", default="l2", choices=("l1", "l2"), help="The talk used L1, Ho et al. L2.")
    model.add_argument(
        "--snr_gamma", type=float, default=5.0, help="Min-SNR loss weighting (Hang et al. 2023); 0 turns it off."
    )


def _add_conditioning_flags(conditioning) -> None:
    conditioning.add_argument(
        "--conditioning",
        choices=CONDITIONINGS,
        default="none",
        help="class: the dataset's labels (num_class_embeds); text: its captions, through a CLIP text encoder and "
        "cross-attention; none: unconditional.",
    )
    conditioning.add_argument(
        "--conditioning_dropout_prob",
        type=float,
        default=0.1,
        help="Share of training images shown with the null label or the empty prompt, so that one model samples "
        "with and without classifier-free guidance.",
    )
    conditioning.add_argument(
        "--class_column", default=None, help="Column of class labels (default: `label`, which built-in sets have)."
    )
    conditioning.add_argument(
        "--caption_column", default=None, help="Column of captions (default: `caption`; built-in emoji has it)."
    )
    conditioning.add_argument(
        "--text_encoder_name_or_path",
        default=None,
        help="A CLIP text encoder and tokenizer (Hub id such as openai/clip-vit-base-patch32, or a folder), kept "
        "frozen. Default: a small CLIP trained here from scratch on the training images and their captions.",
    )


def _add_optimisation_flags(optim) -> None:
    optim.add_argument("--train_batch_size", type=int, default=64)
    optim.add_argument("--num_epochs", type=int, default=None)
    optim.add_argument(
        "--max_train_steps",
        type=int,
        default=None,
        help=f"Default: {DEFAULT_MAX_TRAIN_STEPS} when --num_epochs is unset.",
    )
    optim.add_argument("--gradient_accumulation_steps", type=int, default=1)
    optim.add_argument("--learning_rate", type=float, default=2e-3)
    optim.add_argument("--lr_scheduler", default="cosine", choices=LR_SCHEDULERS)
    optim.add_argument("--lr_warmup_steps", type=int, default=100)
    optim.add_argument("--adam_beta1", type=float, default=0.9)
    optim.add_argument("--adam_beta2", type=float, default=0.999)
    optim.add_argument("--adam_weight_decay", type=float, default=0.0)
    optim.add_argument("--adam_epsilon", type=float, default=1e-8)
    optim.add_argument("--max_grad_norm", type=float, default=1.0)
    optim.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=True)
    optim.add_argument("--ema_inv_gamma", type=float, default=1.0)
    optim.add_argument("--ema_power", type=float, default=3 / 4)
    optim.add_argument("--ema_max_decay", type=float, default=0.999)
    optim.add_argument(
        "--mixed_precision", choices=("no", "fp16", "bf16"), default=None, help="Default: bf16 if supported."
    )
    optim.add_argument("--seed", type=int, default=0)
    optim.add_argument(
        "--tune_malloc",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Keep glibc malloc from returning each step's freed memory to the system (faster CPU steps).",
    )
    optim.add_argument(
        "--num_threads",
        type=int,
        default=None,
        help="CPU threads per process (default: the launcher's or OMP_NUM_THREADS's choice; where `accelerate "
        "launch` or `torchrun` imposed its default of 1, each local process gets its share of the physical cores).",
    )


def _add_output_flags(run) -> None:
    run.add_argument("--output_dir", default="outputs/ddpm-kiit-mnist")
    run.add_argument(
        "--overwrite_output_dir", action="store_true", help="Replace a finished pipeline in --output_dir."
    )
    run.add_argument("--checkpointing_steps", type=int, default=500)
    run.add_argument("--checkpoints_total_limit", type=int, default=2)
    run.add_argument("--resume_from_checkpoint", default=None, help='"latest" or a checkpoint folder.')
    run.add_argument("--save_images_steps", type=int, default=None, help="Write a sample grid every N steps.")
    run.add_argument("--num_sample_images", type=int, default=16)
    run.add_argument("--num_inference_steps", type=int, default=None, help="Steps for sample grids (default: all).")
    run.add_argument(
        "--sample_scheduler", default=None, help="Scheduler for sample grids (default: the training scheduler)."
    )
    run.add_argument("--eval_steps", type=int, default=None, help="Log KID against the held-out split every N steps.")
    run.add_argument("--eval_num_samples", type=int, default=200)
    run.add_argument("--logger", choices=("tensorboard", "wandb", "none"), default="tensorboard")
    run.add_argument("--logging_steps", type=int, default=10)
    run.add_argument("--push_to_hub", action="store_true")
    run.add_argument("--hub_model_id", default=None)
    run.add_argument("--hub_token", default=None)
    run.add_argument("--hub_private_repo", action="store_true")


@dataclass(frozen=True)
class TrainingConfig:
    """
    Every flag of `examples/train.py`, typed (the parser above holds their defaults and help). `parse_args` builds
    one; `validate_args` checks it and returns a completed copy (default data set and step count, bf16 where the
    hardware has it): nothing is changed in place. `command_line` is the argv it was parsed from, for the model card.
    """

    dataset_name: Optional[str]
    dataset_config_name: Optional[str]
    train_data_dir: Optional[str]
    image_column: str
    cache_dir: Optional[str]
    resolution: int
    center_crop: bool
    random_flip: bool
    skip_bad_images: bool
    max_train_samples: Optional[int]
    model_variant: Optional[str]
    model_config: Optional[str]
    channels_last: bool
    scheduler: str
    scheduler_config: Optional[str]
    ddpm_num_steps: int
    ddpm_beta_schedule: str
    rescale_betas_zero_snr: bool
    prediction_type: str
    loss: str
    snr_gamma: float
    train_batch_size: int
    num_epochs: Optional[int]
    max_train_steps: Optional[int]
    gradient_accumulation_steps: int
    learning_rate: float
    lr_scheduler: str
    lr_warmup_steps: int
    adam_beta1: float
    adam_beta2: float
    adam_weight_decay: float
    adam_epsilon: float
    max_grad_norm: float
    use_ema: bool
    ema_inv_gamma: float
    ema_power: float
    ema_max_decay: float
    mixed_precision: Optional[str]
    seed: int
    tune_malloc: bool
    num_threads: Optional[int]
    output_dir: str
    overwrite_output_dir: bool
    checkpointing_steps: int
    checkpoints_total_limit: int
    resume_from_checkpoint: Optional[str]
    save_images_steps: Optional[int]
    num_sample_images: int
    num_inference_steps: Optional[int]
    sample_scheduler: Optional[str]
    eval_steps: Optional[int]
    eval_num_samples: int
    logger: str
    logging_steps: int
    push_to_hub: bool
    hub_model_id: Optional[str]
    hub_token: Optional[str]
    hub_private_repo: bool
    command_line: Optional[List[str]] = None
    conditioning: str = "none"
    conditioning_dropout_prob: float = 0.1
    class_column: Optional[str] = None
    caption_column: Optional[str] = None
    text_encoder_name_or_path: Optional[str] = None
    pretrained_model_name_or_path: Optional[str] = None

    @classmethod
    def from_namespace(cls, namespace: argparse.Namespace) -> "TrainingConfig":
        values = vars(namespace)
        # A Namespace of an earlier version lacks the newer flags: they keep their defaults.
        return cls(
            **{
                field.name: values.get(field.name)
                for field in fields(cls)
                if field.name in values or field.default is dataclasses.MISSING
            }
        )

    def replace(self, **changes) -> "TrainingConfig":
        return dataclasses.replace(self, **changes)


def parse_args(argv: Optional[List[str]] = None) -> TrainingConfig:
    namespace = build_parser().parse_args(argv)
    namespace.command_line = argv
    return TrainingConfig.from_namespace(namespace)


def as_config(args: Union[TrainingConfig, argparse.Namespace]) -> TrainingConfig:
    """Accepts the `argparse.Namespace` of earlier versions too (library functions take the typed config)."""
    return args if isinstance(args, TrainingConfig) else TrainingConfig.from_namespace(args)


def load_model_config(args) -> dict:
    """The `SimpleUNet2DModel` config a run trains, before the data decides `in_channels` (a fine-tuned pipeline's
    unet config is complete: its channels and sample size are the weights')."""
    if getattr(args, "pretrained_model_name_or_path", None) is not None:
        return pretrained_unet_config(args.pretrained_model_name_or_path)
    if args.model_variant is not None:
        config = dict(MODEL_VARIANTS[args.model_variant])
    else:
        config = dict(DEFAULT_MODEL_CONFIG)
    if args.model_config:
        text = args.model_config
        if os.path.isfile(text):
            text = Path(text).read_text()
        try:
            overrides = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"--model_config must be a JSON object or a JSON file path; could not parse {args.model_config!r}"
                f" ({error})."
            ) from error
        if not isinstance(overrides, dict):
            raise ValueError(f"--model_config must be a JSON object, got {type(overrides).__name__}.")
        valid = _unet_init_keys()
        unknown = sorted(set(overrides) - valid)
        if unknown:
            raise ValueError(f"--model_config: unknown keys {unknown}; valid keys are {sorted(valid)}.")
        config.update(overrides)
    config["sample_size"] = args.resolution
    return config


def pretrained_unet_config(path_or_name: str) -> dict:
    """The init arguments of a saved pipeline's `SimpleUNet2DModel`, read from its `unet/config.json`."""
    from ..pretrained import resolve_pipeline

    resolved = resolve_pipeline(path_or_name)
    if Path(resolved).exists() and not (Path(resolved) / "unet" / "config.json").is_file():
        raise ValueError(
            f"--pretrained_model_name_or_path {path_or_name!r} is not a saved pipeline with a unet (no "
            "unet/config.json in it); pass a folder that `examples/train.py` wrote, a Hub id, or a shipped name."
        )
    config = SimpleUNet2DModel.load_config(resolved, subfolder="unet")
    return {key: value for key, value in config.items() if key in _unet_init_keys()}


def _unet_init_keys() -> set:
    """The keys a `SimpleUNet2DModel` config may hold: its `__init__` arguments."""
    return set(inspect.signature(SimpleUNet2DModel.__init__).parameters) - {"self"}


def _check_writable(folder: Path):
    """Whether `folder` can be written, or created and written, without creating it: nothing is written to the
    output folder before the data is known good."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{str(existing)!r} is a file")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise ValueError(f"--output_dir {str(folder)!r} is not writable ({error}); choose another folder.") from error


def validate_args(args: Union[TrainingConfig, argparse.Namespace]) -> TrainingConfig:
    """
    Every check that can fail before any work starts, each naming the flag and what would be valid. Returns the
    config completed with the defaults that depend on other flags; `args` itself is not changed.
    """
    args = as_config(args)
    if args.dataset_name is None and args.train_data_dir is None:
        args = args.replace(dataset_name=DEFAULT_DATASET)
    if args.dataset_name is not None and args.train_data_dir is not None:
        raise ValueError("Give --dataset_name or --train_data_dir, not both.")
    args = _check_numbers(args)
    if not 0 <= args.conditioning_dropout_prob < 1:
        raise ValueError(
            f"--conditioning_dropout_prob must be in [0, 1), got {args.conditioning_dropout_prob}; 0.1 is usual."
        )
    if args.conditioning not in CONDITIONINGS:
        raise ValueError(f"--conditioning must be one of {CONDITIONINGS}, got {args.conditioning!r}.")
    if args.conditioning == "text" and args.eval_steps:
        raise ValueError("--eval_steps scores unconditional samples; a text model has none. Leave --eval_steps off.")
    _check_processes_and_tools(args)
    if args.pretrained_model_name_or_path is not None:
        _check_pretrained(args)
    _check_resolution(args)
    _check_output_dir(args)
    if args.mixed_precision is None:
        args = args.replace(mixed_precision=default_mixed_precision())
    return args


def _check_numbers(args: TrainingConfig) -> TrainingConfig:
    """Counts, rates and decays; returns the config with the step count and SNR weighting completed."""
    for name in (
        "resolution",
        "train_batch_size",
        "gradient_accumulation_steps",
        "checkpointing_steps",
        "logging_steps",
        "num_sample_images",
        "eval_num_samples",
    ):
        value = getattr(args, name)
        if value < 1:
            raise ValueError(f"--{name} must be a positive integer, got {value}.")
    for name in (
        "num_epochs",
        "max_train_steps",
        "save_images_steps",
        "num_inference_steps",
        "max_train_samples",
        "checkpoints_total_limit",
        "eval_steps",
    ):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be a positive integer, got {value}.")
    if args.num_epochs is not None and args.max_train_steps is not None:
        raise ValueError("Give --num_epochs or --max_train_steps, not both (one decides when training ends).")
    if args.num_epochs is None and args.max_train_steps is None:
        args = args.replace(max_train_steps=DEFAULT_MAX_TRAIN_STEPS)
    if args.learning_rate <= 0:
        raise ValueError(f"--learning_rate must be positive, got {args.learning_rate}.")
    if args.lr_warmup_steps < 0:
        raise ValueError(f"--lr_warmup_steps must be >= 0, got {args.lr_warmup_steps}.")
    if args.ddpm_num_steps < 2:
        raise ValueError(f"--ddpm_num_steps must be at least 2, got {args.ddpm_num_steps}.")
    if args.num_inference_steps is not None and args.num_inference_steps > args.ddpm_num_steps:
        raise ValueError(
            f"--num_inference_steps {args.num_inference_steps} exceeds --ddpm_num_steps {args.ddpm_num_steps}."
        )
    if args.snr_gamma is not None and args.snr_gamma < 0:
        raise ValueError(f"--snr_gamma must be >= 0 (0 turns the weighting off), got {args.snr_gamma}.")
    if args.snr_gamma == 0:
        args = args.replace(snr_gamma=None)
    if not 0 < args.ema_max_decay < 1:
        raise ValueError(f"--ema_max_decay must be in (0, 1), got {args.ema_max_decay}.")
    return args


def _check_processes_and_tools(args: TrainingConfig) -> None:
    """Evaluation, the Hub, sampling schedulers, mixed precision and loggers: each must be usable here."""
    if args.eval_steps is not None:
        from ..evaluation.features import CLASSIFIER_FOR

        if args.dataset_name not in CLASSIFIER_FOR or args.resolution != 32:
            raise ValueError(
                f"--eval_steps scores with the shipped classifiers, which read 32x32 {sorted(CLASSIFIER_FOR)} images; "
                f"got --dataset_name {args.dataset_name} at --resolution {args.resolution}. Use `ddpm-kiit evaluate "
                "--features inception` after training instead."
            )
    if args.push_to_hub and not args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id (e.g. your-name/ddpm-kiit-mnist).")
    from ..sampling import SCHEDULERS

    if args.sample_scheduler is not None and args.sample_scheduler not in SCHEDULERS:
        raise ValueError(f"--sample_scheduler must be one of {sorted(SCHEDULERS)}, got {args.sample_scheduler!r}.")
    if args.scheduler != "kiit" and args.sample_scheduler is not None:
        raise ValueError(
            f"--sample_scheduler {args.sample_scheduler} samples a noise process; a model trained with --scheduler "
            f"{args.scheduler} is sampled by its own scheduler. Drop --sample_scheduler."
        )
    if args.scheduler_config is not None:
        try:
            extra = json.loads(args.scheduler_config)
        except json.JSONDecodeError as error:
            raise ValueError(f"--scheduler_config must be a JSON object ({error}).") from error
        if not isinstance(extra, dict):
            raise ValueError(f"--scheduler_config must be a JSON object, got {type(extra).__name__}.")
    if args.mixed_precision == "fp16":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--mixed_precision fp16 needs a GPU; on a CPU use bf16 (or no).")
    if args.logger == "tensorboard":
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise ValueError("--logger tensorboard needs `pip install tensorboard` (or pass --logger none).")


def _check_pretrained(args: TrainingConfig) -> None:
    """A fine-tuned pipeline keeps its unet and its noise process: flags that would change either are refused."""
    from ..schedulers import KiitDDPMScheduler

    name = args.pretrained_model_name_or_path
    if args.model_variant is not None or args.model_config is not None:
        raise ValueError(
            f"--pretrained_model_name_or_path {name!r} fine-tunes that pipeline's unet as it is; drop --model_variant "
            "and --model_config (start a new model with them instead)."
        )
    unet = pretrained_unet_config(name)
    wanted = {"none": None, "class": "num_class_embeds", "text": "cross_attention_dim"}[args.conditioning]
    has = [key for key in ("num_class_embeds", "cross_attention_dim") if unet.get(key)]
    if args.conditioning == "text" or has != ([wanted] if wanted else []):
        kind = {"num_class_embeds": "a class-conditional", "cross_attention_dim": "a text-conditional"}
        raise ValueError(
            f"--pretrained_model_name_or_path {name!r} has {kind[has[0]] if has else 'an unconditional'} unet and "
            f"--conditioning is {args.conditioning}; fine-tuning keeps the conditioning (text-conditional "
            "fine-tuning, which would need the pipeline's text encoder, is not supported yet)."
        )
    if args.resolution != unet["sample_size"]:
        raise ValueError(
            f"--resolution {args.resolution} differs from the pretrained unet's sample_size {unet['sample_size']}; "
            f"pass --resolution {unet['sample_size']}."
        )
    from ..pretrained import resolve_pipeline

    scheduler = KiitDDPMScheduler.load_config(resolve_pipeline(name), subfolder="scheduler")
    ours = {
        "num_train_timesteps": ("--ddpm_num_steps", args.ddpm_num_steps),
        "beta_schedule": ("--ddpm_beta_schedule", args.ddpm_beta_schedule),
        "prediction_type": ("--prediction_type", args.prediction_type),
        "rescale_betas_zero_snr": ("--rescale_betas_zero_snr", args.rescale_betas_zero_snr),
    }
    differing = [
        f"{flag} {value} (the pipeline's {key} is {scheduler.get(key)})"
        for key, (flag, value) in ours.items()
        if scheduler.get(key) != value
    ]
    if args.scheduler != "kiit" or differing:
        raise ValueError(
            f"--pretrained_model_name_or_path {name!r} was trained on another noise process than this run's: "
            f"{'; '.join(differing) or f'--scheduler {args.scheduler}'}. Fine-tuning keeps the pipeline's process; "
            "set these flags to its values."
        )


def _check_resolution(args: TrainingConfig) -> None:
    config = load_model_config(args)
    num_down_blocks = len(config.get("block_out_channels", (64, 128, 256, 512, 1024))) - 1
    patch_size = config.get("patch_size", 1)
    factor = patch_size * 2**num_down_blocks
    if args.resolution % factor:
        nearest = sorted({max(factor, args.resolution // factor * factor), (args.resolution // factor + 1) * factor})
        patches = f" and patches of {patch_size}" if patch_size != 1 else ""
        raise ValueError(
            f"--resolution {args.resolution} is not divisible by {factor}, which this model's "
            f"{num_down_blocks} down blocks{patches} need; use one of {nearest}."
        )


def _check_output_dir(args: TrainingConfig) -> None:
    """Writable, and never a finished pipeline overwritten by accident; a resumed run needs its checkpoint."""
    output_dir = Path(args.output_dir)
    _check_writable(output_dir)
    if args.resume_from_checkpoint is not None:
        if args.resume_from_checkpoint == "latest":
            if latest_checkpoint(output_dir) is None:
                raise ValueError(
                    f"--resume_from_checkpoint latest: there is no checkpoint-* folder in {str(output_dir)!r} to "
                    "resume from. Drop the flag to start a new run."
                )
        elif not (Path(args.resume_from_checkpoint) / "training_state.json").is_file():
            raise ValueError(
                f"--resume_from_checkpoint {args.resume_from_checkpoint!r} is not a checkpoint folder of ours "
                "(no training_state.json in it)."
            )
    elif (output_dir / "model_index.json").exists() and not args.overwrite_output_dir:
        raise ValueError(
            f"{str(output_dir)!r} already holds a trained pipeline; choose another --output_dir, resume with "
            "--resume_from_checkpoint latest, or pass --overwrite_output_dir."
        )
