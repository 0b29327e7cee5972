"""The Accelerate training loop: scheduler.add_noise -> unet -> loss -> optimizer, with EMA, checkpoints and grids."""

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
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from diffusers.utils import logging, make_image_grid

from ..data import ImageTransform, dataset_to_tensor, image_channels, load_image_dataset
from ..devices import configure_cpu_threads, native_bf16
from ..io_utils import promote
from ..models import SimpleUNet2DModel
from ..redaction import has_secret_flag, public_config, rerunnable_argv
from ..schedulers import KiitDDPMScheduler
from .allocator import keep_freed_memory
from .args import latest_checkpoint, list_checkpoints, load_model_config, validate_args

logger = logging.get_logger(__name__)
# Diffusers' loggers keep rank 0's records only; what each process says for itself (its threads) goes through this one.
process_logger = std_logging.getLogger(f"{__name__}.processes")

STATE_FILE = "training_state.json"


class NonFiniteLossError(RuntimeError):
    pass


def default_mixed_precision() -> str:
    """bf16 where the hardware computes it natively (a GPU that supports it, or a CPU with AVX-512 BF16 or AMX)."""
    return "bf16" if native_bf16("cuda" if torch.cuda.is_available() else "cpu") else "no"


def build_scheduler(args):
    """The training scheduler named by `--scheduler`, with `--scheduler_config` overrides."""
    from ..schedulers import GaussianBlurScheduler

    extra = json.loads(args.scheduler_config) if args.scheduler_config else {}
    if args.scheduler == "kiit":
        settings = {
            "num_train_timesteps": args.ddpm_num_steps,
            "beta_schedule": args.ddpm_beta_schedule,
            "prediction_type": args.prediction_type,
            "rescale_betas_zero_snr": args.rescale_betas_zero_snr,
        }
        return KiitDDPMScheduler(**{**settings, **extra})
    process = "cold" if args.scheduler == "gaussian_blur" else "blurring_diffusion"
    return GaussianBlurScheduler(**{"process": process, **extra})


def training_target(scheduler, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the model learns to predict, per `prediction_type`."""
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return clean
    return scheduler.get_velocity(clean, noise, timesteps)


def loss_weights(scheduler, timesteps: torch.Tensor, snr_gamma: Optional[float]) -> Optional[torch.Tensor]:
    """Min-SNR-gamma weights (Hang et al. 2023, eq. 8), expressed for the scheduler's prediction type. Processes
    without a signal-to-noise ratio (cold blur) are not weighted."""
    if snr_gamma is None or getattr(scheduler, "alphas_cumprod", None) is None:
        return None
    alphas_cumprod = scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
    snr = alphas_cumprod / (1 - alphas_cumprod).clamp(min=1e-8)
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


def _weights_checksum(model) -> torch.Tensor:
    """A float64 fingerprint of every parameter and buffer, to check that data-parallel processes agree."""
    total = torch.zeros((), dtype=torch.float64, device=next(model.parameters()).device)
    for index, tensor in enumerate(model.state_dict().values()):
        if tensor.is_floating_point():
            total += (index + 1) * tensor.double().sum()
    return total


def _save_checkpoint(accelerator, unet, ema_model, output_dir: Path, global_step: int, limit: Optional[int]) -> Path:
    """Writes `checkpoint-<step>` through a temporary folder, so a kill at any moment keeps the previous one intact.

    Its `training_state.json` holds the step and each process's weight checksum (they must all be equal).
    """
    checksums = accelerator.gather(_weights_checksum(accelerator.unwrap_model(unet))[None]).tolist()
    final = output_dir / f"checkpoint-{global_step}"
    partial = output_dir / f".checkpoint-{global_step}.partial"
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial), safe_serialization=True)
    if accelerator.is_main_process:
        if ema_model is not None:
            ema_model.save_pretrained(str(partial / "unet_ema"))  # safetensors, not a pickle
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


@contextmanager
def sampling_pipeline(unet, ema_model, scheduler, args):
    """A pipeline over `unet` in eval mode, with the EMA weights swapped in when there are any; training weights
    and mode are restored afterwards. `--sample_scheduler` replaces the training scheduler for sampling."""
    from ..pipelines import KiitDDPMPipeline
    from ..sampling import swap_scheduler

    pipe = KiitDDPMPipeline(unet=unet, scheduler=scheduler)
    if args.sample_scheduler is not None:
        swap_scheduler(pipe, args.sample_scheduler)
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
def sample_grid(unet, ema_model, scheduler, args, device):
    """A grid of `args.num_sample_images` samples (seeded with `args.seed`) with the EMA weights."""
    from ..sampling import grid_shape

    with sampling_pipeline(unet, ema_model, scheduler, args) as pipe:
        images = pipe(
            batch_size=args.num_sample_images,
            generator=torch.Generator(device).manual_seed(args.seed),
            num_inference_steps=args.num_inference_steps,
        ).images
    rows, cols = grid_shape(len(images))
    return make_image_grid(images, rows, cols)


def _export_pipeline(unet, scheduler, args, output_dir: Path, grid, command: str):
    """Writes the finished pipeline, its model card and sample grid into `output_dir`, each entry atomically."""
    from ..pipelines import KiitDDPMPipeline

    hyperparameters = {
        k: getattr(args, k)
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
            "prediction_type",
            "ddpm_num_steps",
            "ddpm_beta_schedule",
            "use_ema",
            "mixed_precision",
            "seed",
        )
    }
    card = {
        "training_command": f"```bash\n{command}\n```",
        "repo_id_or_path": args.hub_model_id or str(output_dir),
        "hyperparameters": hyperparameters,
        "sample_grid": "samples.png",
        "datasets": [args.dataset_name] if args.dataset_name else None,
    }
    pipe = KiitDDPMPipeline(unet=unet, scheduler=scheduler)
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


def train(
    args, step_callback: Optional[Callable[[int, torch.nn.Module, Optional[object], object], bool]] = None
) -> Path:
    """
    Runs a whole training job described by `args` (see `ddpm_kiit.training.args`). Returns the output folder.

    `step_callback(global_step, unet, ema_model, noise_scheduler)`, if given, runs on the main process after every
    optimizer step (the model is unwrapped, `ema_model` is the `EMAModel` or `None`); returning `True` ends training
    there, which is then saved as usual. `benchmarks/time_to_quality.py` uses it to evaluate at wall-clock points.
    Single-process runs only: the other processes would not learn that the run stopped.
    """
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    validate_args(args)
    threads = configure_cpu_threads(args.num_threads)
    if args.mixed_precision is None:
        args.mixed_precision = default_mixed_precision()
    if args.tune_malloc:
        logger.info(f"glibc malloc tuning: {keep_freed_memory()}")
    output_dir = Path(args.output_dir)
    # Launched as several processes (`accelerate launch --multi_gpu --num_processes N`, `torchrun`) on a machine with
    # no GPU, Accelerate only sets up data-parallel training (gloo) when told to use the CPU; without that, each
    # process would silently train a model of its own.
    multi_process_on_cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    accelerator = Accelerator(
        cpu=multi_process_on_cpu,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.logger == "none" else args.logger,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )
    set_seed(args.seed)
    device = accelerator.device
    if device.type == "cpu":
        # Accelerate's multi-CPU set-up may set its own thread count while it initialises: ours is the one that holds.
        torch.set_num_threads(threads.threads)
    process_logger.info(
        f"Process {accelerator.process_index} of {accelerator.num_processes} on {device.type}: {threads}"
    )

    # Data, once, as tensors in memory: no image decoding inside the loop.
    dataset = load_image_dataset(
        args.dataset_name, args.dataset_config_name, args.train_data_dir, args.image_column, "train", args.cache_dir
    )
    if args.max_train_samples is not None:
        dataset = dataset.select(range(min(args.max_train_samples, len(dataset))))
    channels = image_channels(dataset)
    config = load_model_config(args)
    config.setdefault("in_channels", channels)
    config.setdefault("out_channels", config["in_channels"])
    transform = ImageTransform(args.resolution, config["in_channels"], center_crop=args.center_crop)
    with accelerator.main_process_first():
        images = dataset_to_tensor(dataset, transform, skip_bad_images=args.skip_bad_images)
    global_batch = args.train_batch_size * accelerator.num_processes
    if len(images) < global_batch:
        raise ValueError(
            f"The dataset has {len(images)} images, fewer than one batch ({args.train_batch_size} per process x "
            f"{accelerator.num_processes} processes); lower --train_batch_size."
        )
    output_dir.mkdir(parents=True, exist_ok=True)  # the first write, now that the data is known good

    unet = SimpleUNet2DModel(**config)
    if accelerator.num_processes > 1 and unet.config.norm_type == "batch" and device.type == "cuda":
        # BatchNorm under DDP: synchronise statistics across GPUs. SyncBatchNorm has no CPU kernel, so on CPU each
        # process normalises its own batch and DDP broadcasts rank 0's running statistics (documented in README).
        unet = torch.nn.SyncBatchNorm.convert_sync_batchnorm(unet)
    if args.channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    noise_scheduler = build_scheduler(args)
    if getattr(noise_scheduler.config, "process", None) == "cold":
        noise_scheduler.fit_initial_distribution(images)  # where sampling starts; saved with the scheduler

    optimizer = torch.optim.AdamW(
        unet.parameters(),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        weight_decay=args.adam_weight_decay,
        eps=args.adam_epsilon,
    )
    micro_per_epoch = len(images) // global_batch
    steps_per_epoch = math.ceil(micro_per_epoch / args.gradient_accumulation_steps)
    max_train_steps = args.max_train_steps or args.num_epochs * steps_per_epoch
    args.max_train_steps = max_train_steps
    lr_scheduler = get_scheduler(
        args.lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=max_train_steps * accelerator.num_processes,
    )
    unet, optimizer, lr_scheduler = accelerator.prepare(unet, optimizer, lr_scheduler)
    ema_model = None
    if args.use_ema:
        ema_model = EMAModel(
            accelerator.unwrap_model(unet).parameters(),
            decay=args.ema_max_decay,
            use_ema_warmup=True,
            inv_gamma=args.ema_inv_gamma,
            power=args.ema_power,
            model_cls=SimpleUNet2DModel,
            model_config=accelerator.unwrap_model(unet).config,
        )
        ema_model.to(device)

    global_step = 0
    if args.resume_from_checkpoint is not None:
        path = (
            latest_checkpoint(output_dir)
            if args.resume_from_checkpoint == "latest"
            else Path(args.resume_from_checkpoint)
        )
        accelerator.load_state(str(path))
        global_step = json.loads((path / STATE_FILE).read_text())["global_step"]
        if ema_model is not None:
            _load_ema(ema_model, path / "unet_ema", device)
        accelerator.print(f"Resumed from {path} at step {global_step}")

    if accelerator.is_main_process and args.logger != "none":
        accelerator.init_trackers("ddpm-kiit", config=public_config(vars(args)))
    argv = args.command_line if args.command_line is not None else sys.argv[1:]
    # The card's command leaves a token flag out (it reruns with HF_TOKEN or `hf auth login`) and says so.
    command = "accelerate launch examples/train.py " + shlex.join(rerunnable_argv(argv))
    if has_secret_flag(argv):
        command = (
            "# the Hub token given on the command line is not recorded: set HF_TOKEN or run `hf auth login`\n"
            + command
        )

    progress = tqdm(
        total=max_train_steps, initial=global_step, disable=not accelerator.is_local_main_process, desc="Steps"
    )
    images = images.to(device)
    unet.train()
    micro_step = global_step * args.gradient_accumulation_steps
    last_checkpoint = latest_checkpoint(output_dir)
    if step_callback is not None and accelerator.num_processes > 1:
        raise ValueError("`step_callback` works in single-process runs only.")
    first_step, loop_start = global_step, time.perf_counter()
    while global_step < max_train_steps:
        indices = _batch_indices(len(images), global_batch, micro_step, args.seed)
        start = accelerator.process_index * args.train_batch_size
        clean = images[indices[start : start + args.train_batch_size].to(device)]
        generator = _step_generator(args.seed, micro_step, accelerator.process_index, device)
        if args.random_flip:
            flip = torch.rand(clean.shape[0], generator=generator, device=device) < 0.5
            clean = torch.where(flip[:, None, None, None], clean.flip(-1), clean)
        noise = torch.randn(clean.shape, generator=generator, device=device)
        timesteps = torch.randint(
            0, noise_scheduler.config.num_train_timesteps, (clean.shape[0],), generator=generator, device=device
        )
        noisy = noise_scheduler.add_noise(clean, noise, timesteps)
        if args.channels_last:
            noisy = noisy.contiguous(memory_format=torch.channels_last)

        with accelerator.accumulate(unet):
            prediction = unet(noisy, timesteps).sample
            target = training_target(noise_scheduler, clean, noise, timesteps)
            distance = F.l1_loss if args.loss == "l1" else F.mse_loss
            per_sample = distance(prediction.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
            weights = loss_weights(noise_scheduler, timesteps, args.snr_gamma)
            loss = (per_sample * weights).mean() if weights is not None else per_sample.mean()
            accelerator.backward(loss)
            if accelerator.sync_gradients and args.max_grad_norm > 0:
                accelerator.clip_grad_norm_(unet.parameters(), args.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        micro_step += 1

        if not accelerator.sync_gradients:
            continue
        mean_loss = accelerator.gather(loss.detach()[None]).float()
        if not torch.isfinite(mean_loss).all():
            bad = timesteps[~torch.isfinite(per_sample.detach())].tolist()
            raise NonFiniteLossError(
                f"The loss became {mean_loss.tolist()} at step {global_step + 1} (non-finite at timesteps {bad} on "
                f"process {accelerator.process_index}); training stopped without saving. "
                f"The last good checkpoint is {last_checkpoint or 'none (no checkpoint was written yet)'}. Lower "
                "--learning_rate, keep --max_grad_norm on, or try --mixed_precision no."
            )
        if ema_model is not None:
            ema_model.step(accelerator.unwrap_model(unet).parameters())
        global_step += 1
        progress.update(1)
        if global_step % args.logging_steps == 0 or global_step == max_train_steps:
            logs = {"loss": mean_loss.mean().item(), "lr": lr_scheduler.get_last_lr()[0], "step": global_step}
            if ema_model is not None:
                logs["ema_decay"] = ema_model.cur_decay_value or 0.0
            progress.set_postfix(loss=f"{logs['loss']:.4f}", lr=f"{logs['lr']:.2e}")
            accelerator.log(logs, step=global_step)

        if global_step % args.checkpointing_steps == 0 and global_step < max_train_steps:
            last_checkpoint = _save_checkpoint(
                accelerator, unet, ema_model, output_dir, global_step, args.checkpoints_total_limit
            )
        if args.eval_steps and global_step % args.eval_steps == 0 and accelerator.is_main_process:
            accelerator.log(
                _evaluate_kid(accelerator.unwrap_model(unet), ema_model, noise_scheduler, args), step=global_step
            )
        if args.save_images_steps and global_step % args.save_images_steps == 0 and accelerator.is_main_process:
            grid = sample_grid(accelerator.unwrap_model(unet), ema_model, noise_scheduler, args, device)
            _log_grid(accelerator, output_dir, grid, global_step)
        if step_callback is not None:
            if step_callback(global_step, accelerator.unwrap_model(unet), ema_model, noise_scheduler):
                break
    progress.close()
    train_seconds = time.perf_counter() - loop_start
    # Every process's CPU thread count, in process order, for the summary (a collective: every process calls it).
    threads_per_process = accelerator.gather(torch.tensor([torch.get_num_threads()], device=device)).tolist()
    images_seen = (global_step - first_step) * global_batch * args.gradient_accumulation_steps
    summary = {
        "steps": global_step - first_step,
        "train_seconds": round(train_seconds, 2),
        "images_per_second": round(images_seen / max(train_seconds, 1e-9), 1),
        "num_processes": accelerator.num_processes,
        "mixed_precision": args.mixed_precision,
        "threads_per_process": threads_per_process,
    }

    _save_checkpoint(accelerator, unet, ema_model, output_dir, global_step, args.checkpoints_total_limit)
    if accelerator.is_main_process:
        final_unet = accelerator.unwrap_model(unet)
        if ema_model is not None:
            ema_model.copy_to(final_unet.parameters())
        final_unet = final_unet.to(memory_format=torch.contiguous_format).eval()
        grid = sample_grid(final_unet, None, noise_scheduler, args, device)  # EMA weights already copied in
        _log_grid(accelerator, output_dir, grid, global_step)
        _export_pipeline(final_unet, noise_scheduler, args, output_dir, grid, command)
        if args.push_to_hub:
            from ..hub import push_folder

            push_folder(output_dir, args.hub_model_id, token=args.hub_token, private=args.hub_private_repo)
        (output_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return output_dir


def _load_ema(ema_model, folder: Path, device):
    """Restores EMA weights and counters saved by `EMAModel.save_pretrained` (safetensors plus config keys)."""
    config = SimpleUNet2DModel.load_config(folder)
    state = {
        k: config[k]
        for k in (
            "decay",
            "min_decay",
            "optimization_step",
            "update_after_step",
            "use_ema_warmup",
            "inv_gamma",
            "power",
        )
    }
    state["shadow_params"] = [p.detach().clone() for p in SimpleUNet2DModel.from_pretrained(folder).parameters()]
    ema_model.load_state_dict(state)
    ema_model.to(device)


def _evaluate_kid(unet, ema_model, scheduler, args) -> dict:
    """KID (unbiased, so meaningful at small n) of EMA samples against the held-out split, in classifier features."""
    from ..evaluation.evaluate import extract_features, generate_samples, reference_images
    from ..evaluation.features import load_classifier
    from ..evaluation.metrics import kernel_inception_distance

    network = load_classifier(args.dataset_name)
    real = reference_images(args.dataset_name, "test", unet.config.in_channels, args.resolution, args.cache_dir)
    n = min(args.eval_num_samples, len(real))
    with sampling_pipeline(unet, ema_model, scheduler, args) as pipe:
        samples = generate_samples(pipe, n, seed=args.seed, num_inference_steps=args.num_inference_steps)
    kid = kernel_inception_distance(extract_features(network, real[:n]), extract_features(network, samples))
    return {"eval/kid_mean": kid["kid_mean"], "eval/kid_std": kid["kid_std"]}


def _log_grid(accelerator, output_dir: Path, grid, step: int):
    import numpy as np

    from ..sampling import write_image_atomically

    write_image_atomically(grid, output_dir / "samples" / f"step-{step:06d}.png", overwrite=True)
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image("samples", np.asarray(grid.convert("RGB")), step, dataformats="HWC")
