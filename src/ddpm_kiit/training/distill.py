"""
Few-step students distilled from a saved pipeline, with the Accelerate loop of training (EMA, checkpoints, exact
resume, bf16, a progress bar):

- `progressive` (Salimans & Ho 2022, Algorithm 2): each round, a student learns to take in one DDIM step what its
  teacher takes in two, then becomes the next round's teacher; the grid halves from `--teacher_steps` to `--steps`.
  The student samples with Diffusers' `DDIMScheduler` (trailing timesteps, the grids this module trains on).
  `--timesteps` generalizes one round to a grid of the student's choosing: each student step lands where the
  teacher's steps between its two grid points land, on the teacher's `--teacher_steps` grid (`299,224` on 300
  timesteps keeps the teacher's own first step from pure noise and makes the second replace its last three). Such a
  student samples with `DPMSolverMultistepScheduler` at first order (DDIM's update, on custom timesteps), and its
  pipeline's `default_timesteps` hold the grid.
- `consistency` (Song et al. 2023, in the discrete form of latent consistency models, Luo et al. 2023): one student
  maps every point of the teacher's DDIM trajectory on a `--teacher_steps` skeleton to the trajectory's end. It samples
  with Diffusers' `LCMScheduler` in any number of steps up to the skeleton's.

`ddpm-kiit distill TEACHER --method progressive --steps 4 --output_dir OUT` and `accelerate launch
examples/distill.py ...` run `distill`; the student is a pipeline folder like any other, whose
`default_num_inference_steps` is the step count it was trained for.
"""

import argparse
import dataclasses
import json
import math
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, LCMScheduler
from diffusers.training_utils import EMAModel
from diffusers.utils import logging

from ..io_utils import write_json_atomically
from .checkpoints import checkpoint_path, load_ema, resume, save_checkpoint
from .loop import _batch_indices, _step_generator, save_pipeline_atomically

logger = logging.get_logger(__name__)

METHODS = ("progressive", "consistency")
# Progressive: three rounds (the first teacher's DDIM grid is 8 x --steps), 1,200 steps each: the recipe of the shipped
# `mnist-fast` (`--steps 2`; 26-31 minutes on a 2-core CPU). Consistency: the skeleton of LCMScheduler
# (`original_inference_steps`), 50 as in Diffusers' LCM schedulers.
PROGRESSIVE_ROUNDS = 3
DEFAULT_CONSISTENCY_SKELETON = 50
DEFAULT_MAX_TRAIN_STEPS = 3600
TEACHER_FOLDER = "teacher"  # a checkpoint's copy of the current round's teacher (progressive, from round 2 on)
TARGET_FOLDER = "target_ema"  # a checkpoint's consistency target network


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distill",
        description="Distil a saved pipeline into a few-step student (`ddpm-kiit distill`, or `accelerate launch "
        "examples/distill.py`).",
    )
    parser.add_argument("teacher", help="The teacher: a pipeline folder, a Hub id, or a shipped pipeline's name.")
    parser.add_argument("--method", choices=METHODS, default="progressive")
    parser.add_argument("--steps", type=int, default=4, help="Sampling steps the student is trained for.")
    parser.add_argument(
        "--teacher_steps",
        type=int,
        default=None,
        help="progressive: the teacher's DDIM steps in the first round, --steps times a power of two (default: 8 "
        "times --steps, three rounds); consistency: the DDIM skeleton the student learns along (default 50).",
    )
    parser.add_argument(
        "--timesteps",
        type=_timestep_list,
        default=None,
        help="progressive, one round: the student's grid as comma-separated timesteps from the noisiest (e.g. "
        "299,224), --steps of them, all on the teacher's --teacher_steps grid and starting at its first point; each "
        "step lands where the teacher's steps up to the next one (the last: to the clean image) land. Default: "
        "every other point of the teacher's grid.",
    )
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--overwrite_output_dir", action="store_true")
    parser.add_argument(
        "--dataset_name", default=None, help="Images to noise (default: the dataset the teacher's card names)."
    )
    parser.add_argument("--cache_dir", default=None)
    parser.add_argument(
        "--max_train_steps", type=int, default=DEFAULT_MAX_TRAIN_STEPS, help="Optimizer steps, over all rounds."
    )
    parser.add_argument("--train_batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=2e-4)
    parser.add_argument("--lr_warmup_steps", type=int, default=50, help="Warm-up at the start of each round.")
    parser.add_argument("--max_grad_norm", type=float, default=1.0)
    parser.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--ema_max_decay", type=float, default=0.999)
    parser.add_argument(
        "--target_ema_decay", type=float, default=0.95, help="consistency: decay of the target network's EMA."
    )
    parser.add_argument("--mixed_precision", choices=("no", "fp16", "bf16"), default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_threads", type=int, default=None)
    parser.add_argument("--checkpointing_steps", type=int, default=500)
    parser.add_argument("--checkpoints_total_limit", type=int, default=2)
    parser.add_argument("--resume_from_checkpoint", default=None, help='"latest" or a checkpoint folder.')
    parser.add_argument("--num_sample_images", type=int, default=16)
    parser.add_argument("--logging_steps", type=int, default=10)
    return parser


@dataclass(frozen=True)
class DistillConfig:
    """Every flag of `ddpm-kiit distill` (the parser above holds their help). `validate` completes the defaults that
    depend on other flags; `command_line` is the argv, for the student's model card."""

    teacher: str
    output_dir: str
    method: str = "progressive"
    steps: int = 4
    teacher_steps: Optional[int] = None
    timesteps: Optional[Tuple[int, ...]] = None
    overwrite_output_dir: bool = False
    dataset_name: Optional[str] = None
    cache_dir: Optional[str] = None
    max_train_steps: int = DEFAULT_MAX_TRAIN_STEPS
    train_batch_size: int = 64
    learning_rate: float = 2e-4
    lr_warmup_steps: int = 50
    max_grad_norm: float = 1.0
    use_ema: bool = True
    ema_max_decay: float = 0.999
    target_ema_decay: float = 0.95
    mixed_precision: Optional[str] = None
    seed: int = 0
    num_threads: Optional[int] = None
    checkpointing_steps: int = 500
    checkpoints_total_limit: Optional[int] = 2
    resume_from_checkpoint: Optional[str] = None
    num_sample_images: int = 16
    logging_steps: int = 10
    command_line: Optional[List[str]] = None

    def replace(self, **changes) -> "DistillConfig":
        return dataclasses.replace(self, **changes)

    @property
    def num_rounds(self) -> int:
        """Progressive: one round per halving from `teacher_steps` to `steps` (one with `timesteps`); consistency:
        one."""
        if self.method == "consistency" or self.timesteps is not None:
            return 1
        return int(round(math.log2(self.teacher_steps / self.steps)))

    def round_bounds(self) -> List[int]:
        """The optimizer step at which each round starts, and `max_train_steps` at the end."""
        return [round(k * self.max_train_steps / self.num_rounds) for k in range(self.num_rounds + 1)]


def _timestep_list(text: str) -> Tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 299,224, got {text!r}") from None


def parse_args(argv: Optional[List[str]] = None) -> DistillConfig:
    namespace = build_parser().parse_args(argv)
    return DistillConfig(**vars(namespace), command_line=argv)


def validate(config: DistillConfig) -> DistillConfig:
    """Every check that can fail before work starts, each naming the flag; returns the completed config."""
    from ..devices import default_mixed_precision
    from .args import _check_output_dir

    if config.method not in METHODS:
        raise ValueError(f"--method must be one of {METHODS}, got {config.method!r}.")
    if config.teacher_steps is None:
        progressive = config.method == "progressive"
        config = config.replace(
            teacher_steps=config.steps * 2**PROGRESSIVE_ROUNDS if progressive else DEFAULT_CONSISTENCY_SKELETON
        )
    for name in ("steps", "teacher_steps", "max_train_steps", "train_batch_size", "checkpointing_steps"):
        if getattr(config, name) < 1:
            raise ValueError(f"--{name} must be a positive integer, got {getattr(config, name)}.")
    if config.timesteps is not None:
        if config.method != "progressive":
            raise ValueError("--timesteps sets a progressive student's grid; drop it or use --method progressive.")
        if len(config.timesteps) != config.steps:
            raise ValueError(
                f"--timesteps names the student's {len(config.timesteps)} steps but --steps is {config.steps}; give "
                "one timestep per step."
            )
        if config.teacher_steps <= config.steps:
            raise ValueError(
                f"--teacher_steps {config.teacher_steps} must exceed --steps {config.steps}: each student step "
                "replaces one or more teacher steps."
            )
    elif config.method == "progressive":
        ratio = config.teacher_steps / config.steps
        if ratio < 2 or ratio != 2 ** round(math.log2(ratio)):
            raise ValueError(
                f"--method progressive halves the teacher's steps each round, so --teacher_steps must be --steps "
                f"times a power of two (at least 2); got --steps {config.steps} and --teacher_steps "
                f"{config.teacher_steps}. For --steps {config.steps}, try --teacher_steps "
                f"{config.steps * 2**PROGRESSIVE_ROUNDS}."
            )
        if config.max_train_steps < config.num_rounds:
            raise ValueError(
                f"--max_train_steps {config.max_train_steps} is fewer than the {config.num_rounds} rounds from "
                f"{config.teacher_steps} to {config.steps} steps; give each round at least one step."
            )
    elif config.steps > config.teacher_steps:
        raise ValueError(
            f"--method consistency samples on its --teacher_steps skeleton ({config.teacher_steps}), so --steps "
            f"{config.steps} is too many; raise --teacher_steps or lower --steps."
        )
    if config.learning_rate <= 0:
        raise ValueError(f"--learning_rate must be positive, got {config.learning_rate}.")
    for name in ("ema_max_decay", "target_ema_decay"):
        if not 0 < getattr(config, name) < 1:
            raise ValueError(f"--{name} must be in (0, 1), got {getattr(config, name)}.")
    _check_output_dir(config)  # the same rules as training's: it reads the same three flags
    if config.mixed_precision is None:
        config = config.replace(mixed_precision=default_mixed_precision())
    return config


def load_teacher(path_or_id: str, method: str):
    """The teacher pipeline, refused with the reason where it cannot be distilled."""
    from ..pipelines import KiitDDPMPipeline
    from ..pretrained import resolve_pipeline

    resolved = resolve_pipeline(path_or_id)
    if Path(resolved).exists() and not (Path(resolved) / "model_index.json").is_file():
        raise ValueError(
            f"The teacher {path_or_id!r} is not a saved pipeline (no model_index.json in it); pass the folder that "
            "`examples/train.py` wrote, a Hub id, or a shipped pipeline's name."
        )
    teacher = KiitDDPMPipeline.from_pretrained(resolved)
    config = teacher.unet.config
    if getattr(config, "num_class_embeds", None) is not None or getattr(config, "cross_attention_dim", None):
        raise ValueError(
            "Distilling a class- or text-conditional teacher (and its guidance) is not supported yet; distil an "
            "unconditional pipeline."
        )
    if not hasattr(teacher.scheduler, "alphas_cumprod") or hasattr(teacher.scheduler, "initial_sample"):
        raise ValueError(
            f"The teacher's scheduler ({type(teacher.scheduler).__name__}) is not a Gaussian noise process; only "
            "noise-diffusion teachers have DDIM trajectories to distil."
        )
    prediction_type = teacher.scheduler.config.prediction_type
    if prediction_type == "epsilon" and (method == "progressive" or float(teacher.scheduler.alphas_cumprod[-1]) == 0):
        raise ValueError(
            "This teacher predicts the noise (prediction_type='epsilon'), from which x0 is undefined at pure noise: "
            "a student of it cannot take large steps there (Salimans & Ho 2022, section 4). Distil a teacher "
            "trained with --prediction_type v_prediction (the default)."
        )
    return teacher


def student_scheduler(teacher_scheduler, method: str, teacher_steps: int, timesteps=None):
    """The stock Diffusers scheduler that samples the student, with the teacher's noise schedule."""
    if timesteps is not None:
        # DDIM's update (eq. 12, eta = 0) is first-order DPM-Solver++ (Lu et al. 2022, section 4), and this is the
        # stock scheduler that takes it on custom timesteps, landing on the clean image at the end (sigma 0).
        return DPMSolverMultistepScheduler.from_config(
            teacher_scheduler.config, algorithm_type="dpmsolver++", solver_order=1, final_sigmas_type="zero",
            timestep_spacing="trailing", thresholding=False, use_karras_sigmas=False,
        )  # fmt: skip
    if method == "progressive":
        # Trailing spacing: its N-step grid is every other point of its 2N-step grid (checked in `check_grids`), and
        # it starts at the last timestep, pure noise on zero-terminal-SNR schedules. The student's x0 is a virtual
        # one that lands the step where the teacher's two steps land, so it must not be clipped.
        return DDIMScheduler.from_config(
            teacher_scheduler.config, timestep_spacing="trailing", clip_sample=False, set_alpha_to_one=True
        )
    return LCMScheduler.from_config(
        teacher_scheduler.config, original_inference_steps=teacher_steps, clip_sample=False, set_alpha_to_one=True
    )


class _NoiseLevels:
    """sqrt(alpha_bar) and sqrt(1 - alpha_bar) of the teacher's schedule by timestep, computed once in float64; level
    -1 is the clean image (alpha_bar = 1), where DDIM's last step lands."""

    def __init__(self, alphas_cumprod: torch.Tensor, device):
        alpha_bar = torch.cat([alphas_cumprod.double(), torch.ones(1, dtype=torch.float64)])
        self.alpha = alpha_bar.sqrt().float().to(device)
        self.sigma = (1 - alpha_bar).clamp(min=0).sqrt().float().to(device)

    def __call__(self, levels: torch.Tensor):
        return self.alpha[levels][:, None, None, None], self.sigma[levels][:, None, None, None]


def denoised(prediction: torch.Tensor, sample: torch.Tensor, alpha, sigma, prediction_type: str):
    """x0 and the noise that a model's `prediction_type` output means at a sample of level (alpha, sigma)."""
    if prediction_type == "v_prediction":  # v = alpha * eps - sigma * x0 (Salimans & Ho 2022, appendix D)
        return alpha * sample - sigma * prediction, sigma * sample + alpha * prediction
    if prediction_type == "sample":
        return prediction, (sample - alpha * prediction) / sigma
    return (sample - sigma * prediction) / alpha, prediction


def ddim_step(prediction, sample, level, target_level, levels: _NoiseLevels, prediction_type: str):
    """One deterministic DDIM step (Song et al. 2021, eq. 12 with eta = 0) from `level` to `target_level`."""
    alpha, sigma = levels(level)
    x0, noise = denoised(prediction.float(), sample, alpha, sigma, prediction_type)
    alpha_to, sigma_to = levels(target_level)
    return alpha_to * x0 + sigma_to * noise


def progressive_target(sample, landed, level, target_level, levels: _NoiseLevels, prediction_type: str):
    """The output (in `prediction_type`) with which one DDIM step takes `sample` from `level` to `landed` at
    `target_level` (Salimans & Ho 2022, Algorithm 2: x~ = (z'' - (s''/s) z) / (a'' - (s''/s) a)). For v-prediction, its
    MSE weighs the x0 error by 1 + SNR, the "SNR+1" weighting of the paper."""
    alpha, sigma = levels(level)
    alpha_to, sigma_to = levels(target_level)
    ratio = sigma_to / sigma
    x0 = (landed - ratio * sample) / (alpha_to - ratio * alpha)
    if prediction_type == "v_prediction":
        return (alpha * sample - x0) / sigma
    if prediction_type == "sample":
        return x0
    raise ValueError("Progressive distillation trains v- or x0-predicting students (see `load_teacher`).")


@dataclass
class _Run:
    config: DistillConfig
    accelerator: object
    teacher: torch.nn.Module
    student: torch.nn.Module
    optimizer: torch.optim.Optimizer
    ema_model: Optional[EMAModel]
    target_model: Optional[torch.nn.Module]
    target_ema: Optional[EMAModel]
    scheduler: object  # the student's
    levels: _NoiseLevels
    images: torch.Tensor
    output_dir: Path
    teacher_path: str
    global_step: int = 0
    round_index: int = 0
    grids: dict = dataclasses.field(default_factory=dict)
    plan: Optional[Tuple[torch.Tensor, torch.Tensor]] = None  # `grid_plan`, once computed

    @property
    def prediction_type(self) -> str:
        return self.scheduler.config.prediction_type

    def grid(self, num_steps: int) -> torch.Tensor:
        """The teacher's DDIM grid (trailing spacing) of `num_steps`, computed once."""
        if num_steps not in self.grids:
            grid = teacher_grid(self.scheduler.config, num_steps)
            self.grids[num_steps] = torch.tensor(grid, device=self.accelerator.device)
        return self.grids[num_steps]

    def grid_plan(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """`--timesteps`: the teacher's levels (its grid and -1, the clean image) and each student step's span of
        them (`teacher_spans`), computed once."""
        if self.plan is None:
            fine = self.grid(self.config.teacher_steps)
            spans = teacher_spans(self.config.timesteps, fine.tolist())
            self.plan = (torch.cat([fine, fine.new_tensor([-1])]), fine.new_tensor(spans))
        return self.plan

    def student_steps(self) -> int:
        """The step count the current round trains for."""
        if self.config.method == "consistency" or self.config.timesteps is not None:
            return self.config.steps
        return self.config.teacher_steps // 2 ** (self.round_index + 1)


def distill(config: DistillConfig) -> Path:
    """Runs a whole distillation described by `config` (`parse_args`); returns the student's folder."""
    run = _set_up(validate(config))
    first_step, start = run.global_step, time.perf_counter()
    _run_steps(run)
    _finish(run, first_step, time.perf_counter() - start)
    return run.output_dir


def _teacher_dataset(teacher_path: str) -> Optional[str]:
    """The dataset the teacher's model card names (`datasets:` in its metadata), if one."""
    from huggingface_hub import ModelCard

    card = Path(teacher_path) / "README.md"
    if not card.is_file():
        return None
    datasets = ModelCard.load(card).data.to_dict().get("datasets") or []
    return datasets[0] if len(datasets) == 1 else None


def _set_up(config: DistillConfig) -> _Run:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from ..data import ImageTransform, dataset_to_tensor, load_image_dataset
    from ..devices import configure_cpu_threads
    from ..pretrained import resolve_pipeline

    threads = configure_cpu_threads(config.num_threads)
    teacher_pipe = load_teacher(config.teacher, config.method)
    scheduler = student_scheduler(teacher_pipe.scheduler, config.method, config.teacher_steps, config.timesteps)
    check_grids(config, teacher_pipe.scheduler)
    teacher_path = resolve_pipeline(config.teacher)
    dataset_name = config.dataset_name or _teacher_dataset(teacher_path)
    if dataset_name is None:
        raise ValueError(
            "The teacher's model card names no single dataset; say which images to noise with --dataset_name."
        )
    config = config.replace(dataset_name=dataset_name)
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    set_seed(config.seed)
    device = accelerator.device
    if device.type == "cpu":
        torch.set_num_threads(threads.threads)

    unet_config = teacher_pipe.unet.config
    transform = ImageTransform(unet_config.sample_size, unet_config.in_channels)
    dataset = load_image_dataset(config.dataset_name, split="train", cache_dir=config.cache_dir)
    with accelerator.main_process_first():
        images = dataset_to_tensor(dataset, transform)
    global_batch = config.train_batch_size * accelerator.num_processes
    if len(images) < global_batch:
        raise ValueError(f"The dataset has {len(images)} images, fewer than one batch; lower --train_batch_size.")
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    teacher = teacher_pipe.unet.to(device).eval().requires_grad_(False)
    student = type(teacher).from_config(teacher.config)
    student.load_state_dict(teacher.state_dict())
    student.train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.learning_rate, weight_decay=0.0)
    student, optimizer = accelerator.prepare(student, optimizer)
    unwrapped = accelerator.unwrap_model(student)
    target_model, target_ema = None, None
    if config.method == "consistency":
        target_model = type(teacher).from_config(teacher.config).to(device).eval().requires_grad_(False)
        target_model.load_state_dict(teacher.state_dict())
        target_ema = _new_ema(unwrapped, config.target_ema_decay, warmup=False, device=device)
    run = _Run(
        config, accelerator, teacher, student, optimizer, _new_ema(unwrapped, config.ema_max_decay, True, device)
        if config.use_ema else None, target_model, target_ema, scheduler,
        _NoiseLevels(teacher_pipe.scheduler.alphas_cumprod, device), images.to(device), output_dir, teacher_path,
    )  # fmt: skip
    if config.resume_from_checkpoint is not None:
        _resume(run)
    logger.info(
        f"Distilling {teacher_path} by {config.method} distillation into a {config.steps}-step student on "
        f"{len(images)} {config.dataset_name} images; round {run.round_index + 1} of {config.num_rounds}: "
        f"{run.student_steps()} student steps"
    )
    return run


def _new_ema(unet, decay: float, warmup: bool, device) -> EMAModel:
    # The warm-up of training's EMA (`--ema_power` 3/4): decay 1 - (1 + step)^(-3/4), up to `decay`.
    ema = EMAModel(
        unet.parameters(), decay=decay, use_ema_warmup=warmup, power=3 / 4, model_cls=type(unet),
        model_config=unet.config,
    )  # fmt: skip
    ema.to(device)
    return ema


def teacher_grid(scheduler_config, num_steps: int) -> List[int]:
    """The teacher's `num_steps` DDIM grid (trailing spacing) on a schedule's config, noisiest first."""
    scheduler = DDIMScheduler.from_config(scheduler_config, timestep_spacing="trailing")
    scheduler.set_timesteps(num_steps)
    return scheduler.timesteps.tolist()


def teacher_spans(timesteps, grid: List[int]) -> List[Tuple[int, int]]:
    """For each step of a student grid `timesteps` (points of the teacher's `grid`, starting at its first), the
    positions in `grid` where it starts and where it lands (`len(grid)`: the clean image): the teacher's steps it
    replaces."""
    starts = [grid.index(t) for t in timesteps]
    return list(zip(starts, starts[1:] + [len(grid)]))


def check_grids(config: DistillConfig, scheduler) -> None:
    """Progressive distillation needs every student grid to be every other point of its teacher's DDIM grid (or, with
    `--timesteps`, points of it from its first on); consistency distillation a skeleton that ends at the last
    timestep, where sampling starts. `scheduler` holds the teacher's noise schedule."""
    total = scheduler.config.num_train_timesteps
    if config.method == "consistency":
        if total % config.teacher_steps:
            divisors = [k for k in range(2, total + 1) if total % k == 0 and k >= config.steps]
            raise ValueError(
                f"LCMScheduler's skeleton of --teacher_steps {config.teacher_steps} on {total} timesteps stops short "
                f"of the last one, where sampling starts; choose a divisor of {total}, e.g. "
                f"{', '.join(map(str, divisors[:8]))}."
            )
        return

    def grid(num_steps):
        return teacher_grid(scheduler.config, num_steps)

    steps = config.teacher_steps
    if steps > total:
        raise ValueError(f"--teacher_steps {steps} exceeds the teacher's {total} timesteps.")
    if config.timesteps is not None:
        fine = grid(steps)
        timesteps = list(config.timesteps)
        on_grid = all(t in fine for t in timesteps) and timesteps == sorted(set(timesteps), reverse=True)
        if not on_grid or timesteps[0] != fine[0]:
            raise ValueError(
                f"--timesteps {','.join(map(str, timesteps))} must be distinct points of the teacher's "
                f"{steps}-step DDIM grid {fine}, from the noisiest down and starting at {fine[0]} (pure noise, where "
                "sampling starts)."
            )
        return
    while steps > config.steps:
        if grid(steps)[::2] != grid(steps // 2):
            raise ValueError(
                f"DDIM's {steps // 2}-step grid is not every other point of its {steps}-step grid on this "
                f"{total}-timestep schedule; choose --teacher_steps and --steps whose grids nest (powers of two do on "
                "300 and 1,000 timesteps)."
            )
        steps //= 2


def _resume(run: _Run) -> None:
    path = checkpoint_path(run.output_dir, run.config.resume_from_checkpoint)
    model_cls = type(run.teacher)
    run.global_step = resume(
        run.accelerator, run.ema_model, run.output_dir, str(path), run.accelerator.device, model_cls
    )
    run.round_index = _round_of(run.config, run.global_step - 1) if run.global_step else 0
    if (path / TEACHER_FOLDER).is_dir():
        run.teacher.load_state_dict(model_cls.from_pretrained(path / TEACHER_FOLDER).state_dict())
    if run.target_ema is not None:
        load_ema(run.target_ema, path / TARGET_FOLDER, run.accelerator.device, model_cls)
        run.target_ema.copy_to(run.target_model.parameters())


def _round_of(config: DistillConfig, step_index: int) -> int:
    """The round that the optimizer step of 0-based index `step_index` belongs to."""
    bounds = config.round_bounds()
    return max(k for k in range(config.num_rounds) if bounds[k] <= step_index)


def learning_rate_at(config: DistillConfig, step_index: int) -> float:
    """Each round: linear warm-up over `lr_warmup_steps`, then cosine decay to zero at the round's end."""
    bounds = config.round_bounds()
    k = _round_of(config, step_index)
    position, length = step_index - bounds[k], bounds[k + 1] - bounds[k]
    warmup = min(config.lr_warmup_steps, length - 1)
    if position < warmup:
        return config.learning_rate * (position + 1) / (warmup + 1)
    progress = (position - warmup) / max(1, length - warmup)
    return config.learning_rate * 0.5 * (1 + math.cos(math.pi * progress))


def _start_round(run: _Run, round_index: int) -> None:
    """Progressive: the finished student (its EMA weights) becomes the teacher and the new student's start; the EMA
    and the optimizer's moments begin anew, as for a fresh student."""
    student = run.accelerator.unwrap_model(run.student)
    if run.ema_model is not None:
        run.ema_model.copy_to(student.parameters())
    run.teacher.load_state_dict(student.state_dict())
    run.optimizer.state.clear()
    if run.ema_model is not None:
        run.ema_model = _new_ema(student, run.config.ema_max_decay, True, run.accelerator.device)
    run.round_index = round_index
    logger.info(f"Round {round_index + 1} of {run.config.num_rounds}: {run.student_steps()} student steps")


def _progressive_loss(run: _Run, clean, noise, generator) -> torch.Tensor:
    """Salimans & Ho 2022, Algorithm 2: the student's one step from t lands where the teacher's two DDIM steps
    (t -> the grid point between -> the student's next level) land."""
    if run.config.timesteps is not None:
        return _grid_loss(run, clean, noise, generator)
    num_steps, total = run.student_steps(), run.scheduler.config.num_train_timesteps
    coarse, fine = run.grid(num_steps), run.grid(2 * num_steps)
    index = torch.randint(0, num_steps, (clean.shape[0],), generator=generator, device=clean.device)
    t, middle = coarse[index], fine[2 * index + 1]
    landing = t - total // num_steps  # where DDIMScheduler's step from t lands (-1: the clean image)
    alpha_t, sigma_t = run.levels(t)
    noisy = alpha_t * clean + sigma_t * noise
    with torch.no_grad(), run.accelerator.autocast():
        halfway = ddim_step(run.teacher(noisy, t).sample, noisy, t, middle, run.levels, run.prediction_type)
        second = run.teacher(halfway, middle).sample
        there = ddim_step(second, halfway, middle, landing, run.levels, run.prediction_type)
    target = progressive_target(noisy, there, t, landing, run.levels, run.prediction_type)
    with run.accelerator.autocast():
        prediction = run.student(noisy, t).sample
    return F.mse_loss(prediction.float(), target.float())


def _grid_loss(run: _Run, clean, noise, generator) -> torch.Tensor:
    """Algorithm 2 on the student grid of `--timesteps`: the student's step from t lands where the teacher's steps on
    its `--teacher_steps` grid, from t to the student's next grid point, land. Each image draws one of the teacher's
    steps uniformly and trains the student step that replaces it, so a step that replaces three teacher steps is
    trained three times as often as one that replaces one (with uniform grids, every step equally: Algorithm 2). The
    uniform rounds keep `_progressive_loss`, whose draw over student steps the shipped students' commands reproduce."""
    levels, spans = run.grid_plan()
    drawn = torch.randint(0, len(levels) - 1, (clean.shape[0],), generator=generator, device=clean.device)
    step = (drawn[:, None] >= spans[None, :, 0]).sum(dim=1) - 1  # the student step whose span holds the drawn one
    start, end = spans[step, 0], spans[step, 1]
    t, landing = levels[start], levels[end]
    alpha_t, sigma_t = run.levels(t)
    noisy = alpha_t * clean + sigma_t * noise
    there, position = noisy.clone(), start.clone()
    with torch.no_grad(), run.accelerator.autocast():
        while (active := position < end).any():  # one teacher step for every image whose span goes on
            level, to = levels[position[active]], levels[position[active] + 1]
            sample = there[active]
            there[active] = ddim_step(run.teacher(sample, level).sample, sample, level, to, run.levels,
                                      run.prediction_type)  # fmt: skip
            position = position + active.long()
    target = progressive_target(noisy, there, t, landing, run.levels, run.prediction_type)
    with run.accelerator.autocast():
        prediction = run.student(noisy, t).sample
    return F.mse_loss(prediction.float(), target.float())


def _consistency_loss(run: _Run, clean, noise, generator) -> torch.Tensor:
    """Consistency distillation on LCMScheduler's skeleton (Luo et al. 2023, Algorithm 1 without guidance): the
    student at t must agree with the target network one teacher DDIM step later. At the skeleton's first point the
    teacher's own denoised image is the target, which anchors the chain."""
    total, skeleton = run.scheduler.config.num_train_timesteps, run.config.teacher_steps
    spacing = total // skeleton
    index = torch.randint(0, skeleton - 1, (clean.shape[0],), generator=generator, device=clean.device)
    earlier, t = (index + 1) * spacing - 1, (index + 2) * spacing - 1
    alpha_t, sigma_t = run.levels(t)
    noisy = alpha_t * clean + sigma_t * noise
    with torch.no_grad(), run.accelerator.autocast():
        step_back = ddim_step(run.teacher(noisy, t).sample, noisy, t, earlier, run.levels, run.prediction_type)
        target = _consistency_function(run, run.target_model, step_back, earlier)
        anchored = index == 0
        if anchored.any():
            target[anchored] = _consistency_function(run, run.teacher, step_back[anchored], earlier[anchored])
    with run.accelerator.autocast():
        prediction = _consistency_function(run, run.student, noisy, t)
    return F.mse_loss(prediction.float(), target.float())


def _consistency_function(run: _Run, unet, sample, t):
    """f(x, t) = c_skip(t) x + c_out(t) x0(x, t), with LCMScheduler's boundary scalings: what its `step` returns."""
    c_skip, c_out = run.scheduler.get_scalings_for_boundary_condition_discrete(t.float())
    alpha, sigma = run.levels(t)
    x0, _ = denoised(unet(sample, t).sample.float(), sample, alpha, sigma, run.prediction_type)
    return c_skip[:, None, None, None] * sample + c_out[:, None, None, None] * x0


def _run_steps(run: _Run) -> None:
    from tqdm.auto import tqdm

    config, accelerator = run.config, run.accelerator
    bounds = config.round_bounds()
    progress = tqdm(
        total=config.max_train_steps, initial=run.global_step, disable=not accelerator.is_local_main_process,
        desc="Distilling",
    )  # fmt: skip
    loss_of = _progressive_loss if config.method == "progressive" else _consistency_loss
    global_batch = config.train_batch_size * accelerator.num_processes
    while run.global_step < config.max_train_steps:
        step_index = run.global_step
        # A round starts here, unless a resumed run stopped just after starting it (its checkpoint then holds it).
        if step_index in bounds[1:-1] and run.round_index < bounds.index(step_index):
            _start_round(run, bounds.index(step_index))
        indices = _batch_indices(len(run.images), global_batch, step_index, config.seed)
        start = accelerator.process_index * config.train_batch_size
        clean = run.images[indices[start : start + config.train_batch_size].to(accelerator.device)]
        generator = _step_generator(config.seed, step_index, accelerator.process_index, accelerator.device)
        noise = torch.randn(clean.shape, generator=generator, device=clean.device)
        for group in run.optimizer.param_groups:
            group["lr"] = learning_rate_at(config, step_index)
        loss = loss_of(run, clean, noise, generator)
        accelerator.backward(loss)
        if config.max_grad_norm > 0:
            accelerator.clip_grad_norm_(run.student.parameters(), config.max_grad_norm)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        mean_loss = accelerator.gather(loss.detach()[None]).mean().item()
        if not math.isfinite(mean_loss):
            raise ValueError(
                f"The distillation loss became {mean_loss} at step {step_index + 1}; nothing was saved after the last "
                "checkpoint. Lower --learning_rate or try --mixed_precision no."
            )
        student = accelerator.unwrap_model(run.student)
        if run.ema_model is not None:
            run.ema_model.step(student.parameters())
        if run.target_ema is not None:
            run.target_ema.step(student.parameters())
            run.target_ema.copy_to(run.target_model.parameters())
        run.global_step += 1
        progress.update(1)
        if run.global_step % config.logging_steps == 0:
            progress.set_postfix(loss=f"{mean_loss:.4f}", steps=run.student_steps())
        if run.global_step % config.checkpointing_steps == 0 and run.global_step < config.max_train_steps:
            _save(run)
    progress.close()


def _save(run: _Run) -> Path:
    def extra_state(folder: Path) -> None:
        if run.config.method == "progressive" and run.round_index > 0:
            run.teacher.save_pretrained(folder / TEACHER_FOLDER, safe_serialization=True)
        if run.target_ema is not None:
            run.target_ema.save_pretrained(str(folder / TARGET_FOLDER))

    return save_checkpoint(
        run.accelerator, run.student, run.ema_model, run.output_dir, run.global_step,
        run.config.checkpoints_total_limit, extra_state,
    )  # fmt: skip


def chain_summary(summary: dict, teacher_path: str) -> dict:
    """`summary` of a distillation whose teacher may itself be a student (its folder holds a `distill_summary.json`):
    then the teacher's summary goes in whole as `teacher_distillation`, `first_teacher` names the pipeline the chain
    started from, and `total_train_seconds` adds up every distillation in it, which is what the student cost."""
    earlier_file = Path(teacher_path) / "distill_summary.json"
    if not earlier_file.is_file():
        return summary
    earlier = json.loads(earlier_file.read_text())
    return {
        **summary,
        "first_teacher": first_teacher(earlier),
        "total_train_seconds": round(summary["train_seconds"] + total_train_seconds(earlier), 2),
        "teacher_distillation": earlier,
    }


def first_teacher(summary: dict) -> str:
    """The pipeline a student's distillation chain started from (`chain_summary`)."""
    return summary.get("first_teacher", summary["teacher"])


def total_train_seconds(summary: dict) -> float:
    """The distillation time behind a student, its teacher's own distillations included (`chain_summary`)."""
    return summary.get("total_train_seconds", summary["train_seconds"])


def _card_command(config: DistillConfig) -> str:
    from ..redaction import rerunnable_argv

    argv = config.command_line if config.command_line is not None else sys.argv[1:]
    return "ddpm-kiit distill " + shlex.join(rerunnable_argv(argv))


def _finish(run: _Run, first_step: int, seconds: float) -> None:
    """The last checkpoint, then the student (its EMA weights) as a pipeline folder with a card naming its teacher."""
    from ..pipelines import KiitDDPMPipeline
    from ..visualize import image_grid

    config, accelerator = run.config, run.accelerator
    _save(run)
    if accelerator.is_main_process:
        student = accelerator.unwrap_model(run.student)
        if run.ema_model is not None:
            run.ema_model.copy_to(student.parameters())
        student.eval()
        timesteps = None if config.timesteps is None else list(config.timesteps)
        pipe = KiitDDPMPipeline(
            unet=student,
            scheduler=run.scheduler,
            default_num_inference_steps=config.steps,
            default_timesteps=timesteps,
        )
        pipe.set_progress_bar_config(disable=True)
        images = pipe(batch_size=config.num_sample_images, generator=torch.manual_seed(config.seed)).images
        method = {
            "progressive": "progressive distillation (Salimans & Ho 2022)",
            "consistency": "consistency distillation (Song et al. 2023; latent consistency models' discrete form)",
        }[config.method]
        card = {
            "training_command": f"```bash\n{_card_command(config)}\n```",
            "repo_id_or_path": str(run.output_dir),
            "hyperparameters": {
                k: ",".join(map(str, config.timesteps)) if k == "timesteps" else getattr(config, k)
                for k in (
                    "method",
                    "steps",
                    "teacher_steps",
                    "timesteps",
                    "dataset_name",
                    "max_train_steps",
                    "train_batch_size",
                    "learning_rate",
                    "use_ema",
                    "mixed_precision",
                    "seed",
                )
                if k != "timesteps" or config.timesteps is not None
            },  # fmt: skip
            "sample_grid": "samples.png",
            "datasets": [config.dataset_name],
            "distilled_from": {
                "teacher": config.teacher,
                "method": method,
                "steps": config.steps,
                "timesteps": timesteps,
            },
        }
        save_pipeline_atomically(pipe, run.output_dir, card, image_grid(images))
        images_seen = (run.global_step - first_step) * config.train_batch_size * accelerator.num_processes
        summary = {
            "teacher": config.teacher,
            "method": config.method,
            "steps": config.steps,
            **({} if timesteps is None else {"timesteps": timesteps, "teacher_steps": config.teacher_steps}),
            "optimizer_steps": run.global_step - first_step,
            "train_seconds": round(seconds, 2),
            "images_per_second": round(images_seen / max(seconds, 1e-9), 1),
            "mixed_precision": config.mixed_precision,
        }
        write_json_atomically(run.output_dir / "distill_summary.json", chain_summary(summary, run.teacher_path))
    accelerator.wait_for_everyone()
    accelerator.end_training()
