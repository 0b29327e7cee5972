"""The Accelerate training loop: scheduler.add_noise -> unet -> loss -> optimizer, with EMA, checkpoints and grids."""

import argparse
import dataclasses
import json
import logging as std_logging
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from diffusers.utils import logging

from ..data import ImageTransform, dataset_to_tensor, image_channels, load_image_dataset
from ..devices import configure_cpu_threads, default_mixed_precision  # noqa: F401 (re-exported)
from ..io_utils import promote, write_json_atomically
from ..models import SimpleUNet2DModel
from ..redaction import has_secret_flag, public_config, rerunnable_argv
from ..schedulers import KiitDDPMScheduler
from .allocator import keep_freed_memory
from .args import TrainingConfig, load_model_config, validate_args
from .checkpoints import STATE_FILE, latest_checkpoint, list_checkpoints, resume, save_checkpoint  # noqa: F401
from .conditioning import TrainingConditions, load_conditions

logger = logging.get_logger(__name__)
# Diffusers' loggers keep rank 0's records only; what each process says for itself (its threads) goes through this one.
process_logger = std_logging.getLogger(f"{__name__}.processes")


class NonFiniteLossError(RuntimeError):
    pass


def build_scheduler(config: TrainingConfig):
    """The training scheduler named by `--scheduler`, with `--scheduler_config` overrides."""
    from ..schedulers import BlurringDiffusionScheduler, ColdDiffusionScheduler

    extra = json.loads(config.scheduler_config) if config.scheduler_config else {}
    if config.scheduler == "kiit":
        settings = {
            "num_train_timesteps": config.ddpm_num_steps,
            "beta_schedule": config.ddpm_beta_schedule,
            "prediction_type": config.prediction_type,
            "rescale_betas_zero_snr": config.rescale_betas_zero_snr,
        }
        return KiitDDPMScheduler(**{**settings, **extra})
    if config.scheduler == "gaussian_blur":
        return ColdDiffusionScheduler(**extra)
    return BlurringDiffusionScheduler(**extra)


def training_target(scheduler, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the model learns to predict: the scheduler's answer (`scheduler.training_target`), per its process and
    `prediction_type`."""
    return scheduler.training_target(clean, noise, timesteps)


def loss_weights(scheduler, timesteps: torch.Tensor, snr_gamma: Optional[float]) -> Optional[torch.Tensor]:
    """Min-SNR-gamma weights (Hang et al. 2023, eq. 8), expressed for the scheduler's prediction type, from the
    scheduler's `signal_to_noise_ratio`. Processes without a signal-to-noise ratio (cold blur: it returns None) are
    not weighted."""
    if snr_gamma is None:
        return None
    snr = scheduler.signal_to_noise_ratio(timesteps)
    if snr is None:
        return None
    clipped = snr.clamp(max=snr_gamma)
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return clipped / snr.clamp(min=1e-8)
    if prediction_type == "v_prediction":
        return clipped / (snr + 1)
    return clipped


def _step_generator(seed: int, micro_step: int, process_index: int, device) -> torch.Generator:
    # One generator per micro-step and process, derived from the seed: noise, timesteps and the order of the data
    # depend only on (seed, step), so a resumed run draws exactly what the uninterrupted run would have.
    return torch.Generator(device).manual_seed((seed * 1_000_003 + micro_step) * 257 + process_index)


def _batch_indices(num_images: int, global_batch: int, micro_step: int, seed: int) -> torch.Tensor:
    steps_per_epoch = num_images // global_batch
    epoch, position = divmod(micro_step, steps_per_epoch)
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed + 7919 * epoch))
    return order[position * global_batch : (position + 1) * global_batch]


def _pipeline(unet, scheduler, conditions: Optional[TrainingConditions] = None):
    """The pipeline class that samples this model: text-to-image for a text-conditional run, else ours."""
    from ..pipelines import KiitDDPMPipeline, KiitTextToImagePipeline

    if conditions is not None and conditions.kind == "text":
        return KiitTextToImagePipeline(unet, scheduler, conditions.text_encoder, conditions.tokenizer)
    return KiitDDPMPipeline(unet=unet, scheduler=scheduler)


@contextmanager
def sampling_pipeline(
    unet, ema_model, scheduler, sample_scheduler: Optional[str] = None, conditions: Optional[TrainingConditions] = None
):
    """A pipeline over `unet` in eval mode, with the EMA weights swapped in when there are any; training weights
    and mode are restored afterwards. `sample_scheduler` (`--sample_scheduler`, a name of `sampling.SCHEDULERS`)
    replaces the training scheduler for sampling."""
    from ..sampling import swap_scheduler

    pipe = _pipeline(unet, scheduler, conditions)
    if sample_scheduler is not None:
        swap_scheduler(pipe, sample_scheduler)
    pipe.set_progress_bar_config(disable=True)
    if ema_model is not None:
        ema_model.store(unet.parameters())
        ema_model.copy_to(unet.parameters())
    was_training = unet.training
    unet.eval()
    try:
        yield pipe
    finally:
        unet.train(was_training)
        if ema_model is not None:
            ema_model.restore(unet.parameters())


@torch.no_grad()
def sample_grid(unet, ema_model, scheduler, config: TrainingConfig, device, conditions=None):
    """A grid of `config.num_sample_images` samples (seeded with `config.seed`) with the EMA weights; a conditional
    model draws its classes, or its first captions, in turn."""
    from ..visualize import image_grid

    count = config.num_sample_images
    asked = conditions.sample_kwargs(count) if conditions is not None else {}
    if "prompt" not in asked:
        asked["batch_size"] = count
    with sampling_pipeline(unet, ema_model, scheduler, config.sample_scheduler, conditions) as pipe:
        images = pipe(
            generator=torch.Generator(device).manual_seed(config.seed),
            num_inference_steps=config.num_inference_steps,
            **asked,
        ).images
    return image_grid(images)


def _export_pipeline(unet, scheduler, config: TrainingConfig, output_dir: Path, grid, command: str, conditions=None):
    """Writes the finished pipeline, its model card and sample grid into `output_dir`, each entry atomically."""
    hyperparameters = {
        k: getattr(config, k)
        for k in (
            "dataset_name",
            "resolution",
            "train_batch_size",
            "max_train_steps",
            "learning_rate",
            "lr_scheduler",
            "lr_warmup_steps",
            "loss",
            "snr_gamma",
            "conditioning",
            "conditioning_dropout_prob",
            "prediction_type",
            "ddpm_num_steps",
            "ddpm_beta_schedule",
            "use_ema",
            "mixed_precision",
            "seed",
        )
    }
    if config.pretrained_model_name_or_path is not None:
        hyperparameters = {"pretrained_model_name_or_path": config.pretrained_model_name_or_path, **hyperparameters}
    card = {
        "training_command": f"```bash\n{command}\n```",
        "repo_id_or_path": config.hub_model_id or str(output_dir),
        "hyperparameters": hyperparameters,
        "sample_grid": "samples.png",
        "datasets": [config.dataset_name] if config.dataset_name else None,
    }
    return save_pipeline_atomically(_pipeline(unet, scheduler, conditions), output_dir, card, grid)


def save_pipeline_atomically(pipe, output_dir: Path, card: dict, grid) -> object:
    """Saves `pipe` with its model card (`card`: `render_model_card`'s keyword arguments) and sample grid into
    `output_dir` beside whatever else is there (checkpoints, logs), each entry renamed into place."""
    for stale in output_dir.glob(".pipeline.*"):  # left by a run killed while exporting
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=".pipeline.", dir=output_dir))
    try:
        pipe.save_pretrained(staging, safe_serialization=True, model_card_kwargs=card)
        grid.save(staging / "samples.png")
        # model_index.json goes last: loaders recognise a pipeline by it, so the folder is one only when complete.
        for entry in sorted(staging.iterdir(), key=lambda entry: entry.name == "model_index.json"):
            promote(entry, output_dir / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return pipe


@dataclass
class _Run:
    """What one training run holds between its set-up, its steps and its end."""

    config: TrainingConfig
    accelerator: object
    unet: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    ema_model: Optional[object]
    noise_scheduler: object
    images: torch.Tensor
    output_dir: Path
    global_batch: int
    max_train_steps: int
    command: str
    global_step: int = 0
    conditions: Optional[TrainingConditions] = None

    @property
    def device(self) -> torch.device:
        return self.accelerator.device


def train(
    args: Union[TrainingConfig, "argparse.Namespace"],
    step_callback: Optional[Callable[[int, torch.nn.Module, Optional[object], object], bool]] = None,
) -> Path:
    """
    Runs a whole training job described by `args` (a `TrainingConfig` from `parse_args`; see
    `ddpm_kiit.training.args`). Returns the output folder.

    `step_callback(global_step, unet, ema_model, noise_scheduler)`, if given, runs on the main process after every
    optimizer step (the model is unwrapped, `ema_model` is the `EMAModel` or `None`); returning `True` ends training
    there, which is then saved as usual. `benchmarks/time_to_quality.py` uses it to evaluate at wall-clock points.
    Single-process runs only: the other processes would not learn that the run stopped.
    """
    run = _set_up(validate_args(args))
    if step_callback is not None and run.accelerator.num_processes > 1:
        raise ValueError("`step_callback` works in single-process runs only.")
    first_step, loop_start = run.global_step, time.perf_counter()
    _run_steps(run, step_callback)
    _finish(run, first_step, time.perf_counter() - loop_start)
    return run.output_dir


def _set_up(config: TrainingConfig) -> _Run:
    """Threads, Accelerate, the data (checked before anything is written), the model, optimizer, EMA, resumption."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed

    threads = configure_cpu_threads(config.num_threads)
    if config.tune_malloc:
        logger.info(f"glibc malloc tuning: {keep_freed_memory()}")
    output_dir = Path(config.output_dir)
    # Launched as several processes (`accelerate launch --multi_gpu --num_processes N`, `torchrun`) on a machine with
    # no GPU, Accelerate only sets up data-parallel training (gloo) when told to use the CPU; without that, each
    # process would silently train a model of its own.
    multi_process_on_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    accelerator = Accelerator(
        cpu=multi_process_on_cpu,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        log_with=None if config.logger == "none" else config.logger,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )
    set_seed(config.seed)
    device = accelerator.device
    if device.type == "cpu":
        # Accelerate's multi-CPU set-up may set its own thread count while it initialises: ours is the one that holds.
        torch.set_num_threads(threads.threads)
    process_logger.info(
        f"Process {accelerator.process_index} of {accelerator.num_processes} on {device.type}: {threads}"
    )

    images, model_config, conditions = _load_images(config, accelerator)
    global_batch = config.train_batch_size * accelerator.num_processes
    if len(images) < global_batch:
        raise ValueError(
            f"The dataset has {len(images)} images, fewer than one batch ({config.train_batch_size} per process x "
            f"{accelerator.num_processes} processes); lower --train_batch_size."
        )
    output_dir.mkdir(parents=True, exist_ok=True)  # the first write, now that the data is known good
    unet = _build_unet(config, model_config, accelerator)
    noise_scheduler = build_scheduler(config)
    if hasattr(noise_scheduler, "fit_initial_distribution"):
        noise_scheduler.fit_initial_distribution(images)  # where sampling starts; saved with the scheduler

    optimizer = torch.optim.AdamW(
        unet.parameters(),
        lr=config.learning_rate,
        betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.adam_weight_decay,
        eps=config.adam_epsilon,
    )
    steps_per_epoch = math.ceil(len(images) // global_batch / config.gradient_accumulation_steps)
    config = config.replace(max_train_steps=config.max_train_steps or config.num_epochs * steps_per_epoch)
    lr_scheduler = get_scheduler(
        config.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=config.max_train_steps * accelerator.num_processes,
    )
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    ema_model = _build_ema(config, accelerator.unwrap_model(unet), device)
    run = _Run(
        config, accelerator, unet, optimizer, lr_scheduler, ema_model, noise_scheduler, images.to(device),
        output_dir, global_batch, config.max_train_steps, _card_command(config),
        conditions=conditions.to(device) if conditions is not None else None,
    )  # fmt: skip
    if config.resume_from_checkpoint is not None:
        run.global_step = resume(accelerator, ema_model, output_dir, config.resume_from_checkpoint, device)
    if accelerator.is_main_process and config.logger != "none":
        accelerator.init_trackers("ddpm-kiit", config=public_config(dataclasses.asdict(config)))
    return run


def _load_images(config: TrainingConfig, accelerator) -> tuple:
    """The training images, once, as one tensor in memory (no decoding inside the loop), and the model config
    completed with their channels."""
    dataset = load_image_dataset(
        config.dataset_name,
        config.dataset_config_name,
        config.train_data_dir,
        config.image_column,
        "train",
        config.cache_dir,
        caption_column=config.caption_column,
        class_column=config.class_column,
    )
    if config.max_train_samples is not None:
        dataset = dataset.select(range(min(config.max_train_samples, len(dataset))))
    model_config = load_model_config(config)
    model_config.setdefault("in_channels", image_channels(dataset))
    model_config.setdefault("out_channels", model_config["in_channels"])
    transform = ImageTransform(config.resolution, model_config["in_channels"], center_crop=config.center_crop)
    with accelerator.main_process_first():
        images = dataset_to_tensor(dataset, transform, skip_bad_images=config.skip_bad_images)
    # Every process reads the same labels (and, for text, trains or loads the same frozen encoder), side by side.
    conditions, images = load_conditions(config, dataset, images)
    if conditions is not None:
        model_config.update({k: v for k, v in conditions.model_config(model_config).items() if k not in model_config})
    return images, model_config, conditions


def _build_unet(config: TrainingConfig, model_config: dict, accelerator) -> torch.nn.Module:
    if config.pretrained_model_name_or_path is not None:
        unet = load_pretrained_unet(config.pretrained_model_name_or_path)
    else:
        unet = SimpleUNet2DModel(**model_config)
    if accelerator.num_processes > 1 and unet.config.norm_type == "batch" and accelerator.device.type == "cuda":
        # BatchNorm under DDP: synchronise statistics across GPUs. SyncBatchNorm has no CPU kernel, so on CPU each
        # process normalises its own batch and DDP broadcasts rank 0's running statistics (documented in the docs).
        unet = torch.nn.SyncBatchNorm.convert_sync_batchnorm(unet)
    if config.channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    return unet


def load_pretrained_unet(path_or_name: str) -> SimpleUNet2DModel:
    """A saved pipeline's unet in float32 (from its fp16 variant where that is what the folder holds), to fine-tune.
    The training images are converted to its channels, as to any model's."""
    from ..pipelines import KiitDDPMPipeline
    from ..pretrained import resolve_pipeline

    return KiitDDPMPipeline.from_pretrained(resolve_pipeline(path_or_name)).unet


def _build_ema(config: TrainingConfig, unet, device):
    if not config.use_ema:
        return None
    ema_model = EMAModel(
        unet.parameters(),
        decay=config.ema_max_decay,
        use_ema_warmup=True,
        inv_gamma=config.ema_inv_gamma,
        power=config.ema_power,
        model_cls=SimpleUNet2DModel,
        model_config=unet.config,
    )
    ema_model.to(device)
    return ema_model


def _card_command(config: TrainingConfig) -> str:
    """The command the model card records: without a token flag (it reruns with HF_TOKEN or `hf auth login`)."""
    argv = config.command_line if config.command_line is not None else sys.argv[1:]
    command = "accelerate launch examples/train.py " + shlex.join(rerunnable_argv(argv))
    if has_secret_flag(argv):
        command = (
            "# the Hub token given on the command line is not recorded: set HF_TOKEN or run `hf auth login`\n"
            + command
        )
    return command


def _run_steps(run: _Run, step_callback) -> None:
    """Optimizer steps until `max_train_steps` (or until `step_callback` says stop), with logs, checkpoints, KID and
    sample grids at their intervals."""
    from tqdm.auto import tqdm

    config, accelerator = run.config, run.accelerator
    progress = tqdm(
        total=run.max_train_steps,
        initial=run.global_step,
        disable=not accelerator.is_local_main_process,
        desc="Steps",
    )
    run.unet.train()
    micro_step = run.global_step * config.gradient_accumulation_steps
    last_checkpoint = latest_checkpoint(run.output_dir)
    while run.global_step < run.max_train_steps:
        loss, per_sample, timesteps = _micro_step(run, micro_step)
        micro_step += 1
        if not accelerator.sync_gradients:
            continue
        mean_loss = accelerator.gather(loss.detach()[None]).float()
        if not torch.isfinite(mean_loss).all():
            bad = timesteps[~torch.isfinite(per_sample.detach())].tolist()
            raise NonFiniteLossError(
                f"The loss became {mean_loss.tolist()} at step {run.global_step + 1} (non-finite at timesteps {bad} "
                f"on process {accelerator.process_index}); training stopped without saving. "
                f"The last good checkpoint is {last_checkpoint or 'none (no checkpoint was written yet)'}. Lower "
                "--learning_rate, keep --max_grad_norm on, or try --mixed_precision no."
            )
        if run.ema_model is not None:
            run.ema_model.step(accelerator.unwrap_model(run.unet).parameters())
        run.global_step += 1
        progress.update(1)
        step = run.global_step
        if step % config.logging_steps == 0 or step == run.max_train_steps:
            logs = {"loss": mean_loss.mean().item(), "lr": run.lr_scheduler.get_last_lr()[0], "step": step}
            if run.ema_model is not None:
                logs["ema_decay"] = run.ema_model.cur_decay_value or 0.0
            progress.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}")
            accelerator.log(logs, step=step)
        if step % config.checkpointing_steps == 0 and step < run.max_train_steps:
            last_checkpoint = save_checkpoint(
                accelerator, run.unet, run.ema_model, run.output_dir, step, config.checkpoints_total_limit
            )
        _periodic_samples(run)
        if step_callback is not None:
            if step_callback(step, accelerator.unwrap_model(run.unet), run.ema_model, run.noise_scheduler):
                break
    progress.close()


def _micro_step(run: _Run, micro_step: int) -> tuple:
    """One forward/backward pass on this process's share of the batch: scheduler.add_noise -> unet -> loss."""
    config, accelerator, device, scheduler = run.config, run.accelerator, run.device, run.noise_scheduler
    indices = _batch_indices(len(run.images), run.global_batch, micro_step, config.seed)
    start = accelerator.process_index * config.train_batch_size
    rows = indices[start : start + config.train_batch_size].to(device)
    clean = run.images[rows]
    generator = _step_generator(config.seed, micro_step, accelerator.process_index, device)
    if config.random_flip:
        flip = torch.rand(clean.shape[0], generator=generator, device=device) < 0.5
        clean = torch.where(flip[:, None, None, None], clean.flip(-1), clean)
    noise = torch.randn(clean.shape, generator=generator, device=device)
    timesteps = torch.randint(
        0, scheduler.config.num_train_timesteps, (clean.shape[0],), generator=generator, device=device
    )
    noisy = scheduler.add_noise(clean, noise, timesteps)
    # Drawn after everything an unconditional run draws, so that its random stream is unchanged.
    conditioning = (
        run.conditions.unet_kwargs(rows, generator, config.conditioning_dropout_prob) if run.conditions else {}
    )
    if config.channels_last:
        noisy = noisy.contiguous(memory_format=torch.channels_last)
    with accelerator.accumulate(run.unet):
        prediction = run.unet(noisy, timesteps, **conditioning).sample
        target = training_target(scheduler, clean, noise, timesteps)
        distance = F.l1_loss if config.loss == "l1" else F.mse_loss
        per_sample = distance(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        weights = loss_weights(scheduler, timesteps, config.snr_gamma)
        loss = (per_sample * weights).mean() if weights is not None else per_sample.mean()
        accelerator.backward(loss)
        if accelerator.sync_gradients and config.max_grad_norm > 0:
            accelerator.clip_grad_norm_(run.unet.parameters(), config.max_grad_norm)
        run.optimizer.step()
        run.lr_scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
    return loss, per_sample, timesteps


def _periodic_samples(run: _Run) -> None:
    """KID every `--eval_steps` and a sample grid every `--save_images_steps`, on the main process."""
    config, accelerator, step = run.config, run.accelerator, run.global_step
    if not accelerator.is_main_process:
        return
    unet = accelerator.unwrap_model(run.unet)
    if config.eval_steps and step % config.eval_steps == 0:
        accelerator.log(_evaluate_kid(unet, run.ema_model, run.noise_scheduler, config), step=step)
    if config.save_images_steps and step % config.save_images_steps == 0:
        grid = sample_grid(unet, run.ema_model, run.noise_scheduler, config, run.device, run.conditions)
        _log_grid(accelerator, run.output_dir, grid, step)


def _finish(run: _Run, first_step: int, train_seconds: float) -> None:
    """The last checkpoint, the EMA weights into the pipeline, its grid and card, the push, the summary."""
    config, accelerator = run.config, run.accelerator
    # Every process's CPU thread count, in process order, for the summary (a collective: every process calls it).
    threads = accelerator.gather(torch.tensor([torch.get_num_threads()], device=run.device)).tolist()
    images_seen = (run.global_step - first_step) * run.global_batch * config.gradient_accumulation_steps
    summary = {
        "steps": run.global_step - first_step,
        "train_seconds": round(train_seconds, 2),
        "images_per_second": round(images_seen / max(train_seconds, 1e-9), 1),
        "num_processes": accelerator.num_processes,
        "mixed_precision": config.mixed_precision,
        "threads_per_process": threads,
    }
    save_checkpoint(
        accelerator, run.unet, run.ema_model, run.output_dir, run.global_step, config.checkpoints_total_limit
    )
    if accelerator.is_main_process:
        final_unet = accelerator.unwrap_model(run.unet)
        if run.ema_model is not None:
            run.ema_model.copy_to(final_unet.parameters())
        final_unet = final_unet.to(memory_format=torch.contiguous_format).eval()
        # The EMA weights are already in.
        grid = sample_grid(final_unet, None, run.noise_scheduler, config, run.device, run.conditions)
        _log_grid(accelerator, run.output_dir, grid, run.global_step)
        _export_pipeline(final_unet, run.noise_scheduler, config, run.output_dir, grid, run.command, run.conditions)
        if config.push_to_hub:
            from ..hub import push_folder

            push_folder(run.output_dir, config.hub_model_id, token=config.hub_token, private=config.hub_private_repo)
        write_json_atomically(run.output_dir / "train_summary.json", summary)
    accelerator.wait_for_everyone()
    accelerator.end_training()


def _evaluate_kid(unet, ema_model, scheduler, config: TrainingConfig) -> dict:
    """KID (unbiased, so meaningful at small n) of EMA samples against the held-out split, in classifier features."""
    from ..evaluation.evaluate import extract_features, generate_samples, reference_images
    from ..evaluation.features import load_classifier
    from ..evaluation.metrics import kernel_inception_distance

    network = load_classifier(config.dataset_name)
    real = reference_images(config.dataset_name, "test", unet.config.in_channels, config.resolution, config.cache_dir)
    n = min(config.eval_num_samples, len(real))
    with sampling_pipeline(unet, ema_model, scheduler, config.sample_scheduler) as pipe:
        samples = generate_samples(pipe, n, seed=config.seed, num_inference_steps=config.num_inference_steps)
    kid = kernel_inception_distance(extract_features(network, real[:n]), extract_features(network, samples))
    return {"eval/kid_mean": kid["kid_mean"], "eval/kid_std": kid["kid_std"]}


def _log_grid(accelerator, output_dir: Path, grid, step: int):
    import numpy as np

    from ..sampling import write_image_atomically

    write_image_atomically(grid, output_dir / "samples" / f"step-{step:06d}.png", overwrite=True)
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image("samples", np.asarray(grid.convert("RGB")), step, dataformats="HWC")
