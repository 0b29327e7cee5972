"""`ddpm-kiit evaluate`: generate, extract features, and score against the held-out split, beside the real floor."""

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Dict, Optional

import torch
from diffusers.utils import logging
from tqdm.auto import tqdm

from ..data import ImageTransform, dataset_to_tensor, default_cache_dir, load_image_dataset
from ..io_utils import atomic_file
from .features import InceptionFeatures, load_classifier
from .metrics import copy_fraction, frechet_distance, kernel_inception_distance, precision_recall

logger = logging.get_logger(__name__)

FEATURES = ("classifier", "inception")
COPY_CHECK_TRAIN_IMAGES = 5000
REFERENCE_FEATURES_VERSION = 2  # part of every disk-cache key: raise it when what is stored changes meaning
# (2: Inception features with the standard FID preprocessing)


class EvaluationCache:
    """
    What evaluations at the same settings share, kept in memory by whoever scores many sample sets (a benchmark's
    sweep): the feature network (loading Inception takes seconds) and the real side of the last settings (held-out
    features, the copy check's training features, the floor), which is the same for every pipeline scored at them
    and, with Inception on a CPU, most of the work. Across processes the disk cache of `reference_features` keeps the
    real side too. One entry each: a few MB, not a growing store.
    """

    def __init__(self):
        self._network_key, self._network = None, None
        self._reference_key, self._reference = None, None

    def network(self, features: str, dataset: str):
        if features not in FEATURES:
            raise ValueError(f"`features` must be one of {FEATURES}, got {features!r}.")
        key = (features, dataset if features == "classifier" else None)
        if key != self._network_key:
            self._network_key = key
            self._network = load_classifier(dataset) if features == "classifier" else InceptionFeatures()
        return self._network

    def reference(self, key: tuple, compute) -> tuple:
        if key != self._reference_key:
            self._reference_key, self._reference = key, compute()
        return self._reference


def feature_network(features: str, dataset: str, cache: Optional[EvaluationCache] = None):
    """The network whose features the scores compare: the dataset's classifier, or the standard FID Inception."""
    return (cache or EvaluationCache()).network(features, dataset)


@torch.no_grad()
def extract_features(network, images: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    """Features of `(n, C, H, W)` images in [-1, 1], in batches."""
    return torch.cat([network.features(images[i : i + batch_size].float()) for i in range(0, len(images), batch_size)])


@torch.no_grad()
def generate_samples(pipe, num_samples: int, batch_size: int = 250, seed: int = 0, num_inference_steps=None):
    """`num_samples` images in [-1, 1] from `pipe`, in batches, each batch seeded from `seed` and its index. A
    conditional pipeline draws without a condition: the null label, or the empty prompt (unguided)."""
    from ..pipelines import KiitTextToImagePipeline

    pipe.set_progress_bar_config(disable=True)
    batches = []
    for index, start in enumerate(tqdm(range(0, num_samples, batch_size), desc="Generating")):
        count = min(batch_size, num_samples - start)
        text = isinstance(pipe, KiitTextToImagePipeline)
        images = pipe(
            **({"prompt": [""] * count, "guidance_scale": 1.0} if text else {"batch_size": count}),
            generator=torch.Generator(pipe.device).manual_seed(seed * 100_003 + index),
            num_inference_steps=num_inference_steps,
            output_type="pt",
        ).images
        batches.append(images.cpu() * 2 - 1)
    return torch.cat(batches)


def reference_images(dataset: str, split: str, channels: int, resolution: int, cache_dir=None) -> torch.Tensor:
    data = load_image_dataset(dataset, split=split, cache_dir=cache_dir)
    return dataset_to_tensor(data, ImageTransform(resolution, channels))


def score(real: torch.Tensor, fake: torch.Tensor, train: Optional[torch.Tensor] = None) -> Dict[str, float]:
    """Every metric of one comparison, on features."""
    result = {"fid": frechet_distance(real, fake), **kernel_inception_distance(real, fake)}
    result.update(precision_recall(real, fake))
    if train is not None:
        result["copy_fraction"] = copy_fraction(train, fake)
    return result


def pipeline_hash(pipe) -> str:
    """A short hash of the unet's and scheduler's configs, to tie a report to the pipeline it measured."""
    configs = json.dumps([dict(pipe.unet.config), dict(pipe.scheduler.config)], sort_keys=True, default=str)
    return hashlib.sha256(configs.encode()).hexdigest()[:16]


def real_floor(
    dataset: str,
    num_samples: int,
    features: str = "classifier",
    seed: int = 0,
    cache_dir=None,
    cache: Optional[EvaluationCache] = None,
) -> Dict[str, float]:
    """The same metrics between `num_samples` training images and `num_samples` held-out images: what a perfect
    model would score at this n (FID's bias grows as n shrinks)."""
    network = feature_network(features, dataset, cache)
    test = reference_images(dataset, "test", 1 if features == "classifier" else 3, 32, cache_dir)
    train = reference_images(dataset, "train", test.shape[1], 32, cache_dir)
    _check_n(num_samples, len(test), dataset)
    generator = torch.Generator().manual_seed(seed)
    real = extract_features(network, test[torch.randperm(len(test), generator=generator)[:num_samples]])
    other = extract_features(network, train[torch.randperm(len(train), generator=generator)[:num_samples]])
    return score(real, other)


def _check_n(num_samples: int, available: int, dataset: str):
    if num_samples > available:
        raise ValueError(
            f"--num-samples {num_samples} is larger than the {available} held-out images of {dataset!r}; use at most "
            f"{available}, or a dataset with a larger test split (e.g. mnist-full)."
        )


def evaluate_pipeline(
    pipe,
    dataset: str = "mnist",
    num_samples: int = 1000,
    features: str = "classifier",
    batch_size: int = 250,
    seed: int = 0,
    num_inference_steps: Optional[int] = None,
    samples_cache: Optional[os.PathLike] = None,
    cache_dir=None,
    cache: Optional[EvaluationCache] = None,
) -> Dict:
    """Scores `pipe` against the held-out split of `dataset`, with the real-vs-real floor at the same n. Pass one
    `EvaluationCache` to many calls at the same settings to load the network and compute the real side once."""
    cache = cache or EvaluationCache()
    start = time.perf_counter()
    config = pipe.unet.config
    if features == "classifier" and (config.in_channels != 1 or config.sample_size != 32):
        raise ValueError(
            f"The {dataset} classifier takes 1-channel 32x32 images; this pipeline makes {config.in_channels}-channel "
            f"{config.sample_size}x{config.sample_size} ones. Use --features inception."
        )
    try:  # every check before the sampling, which is most of the time
        test = reference_images(dataset, "test", config.in_channels, config.sample_size, cache_dir)
    except ValueError as error:
        raise ValueError(f"{error} Evaluation needs a held-out split of {dataset!r} to compare against.") from error
    _check_n(num_samples, len(test), dataset)
    cache.network(features, dataset)

    cache_file = None
    if samples_cache is not None:
        key = _samples_fingerprint(pipe, num_samples, batch_size, seed, num_inference_steps)
        cache_file = Path(samples_cache) / f"samples-{key[:32]}.safetensors"
    if cache_file is not None and cache_file.is_file():
        from safetensors.torch import load_file

        samples = load_file(str(cache_file))["samples"].float() / 127.5 - 1
    else:
        # Scored as 8-bit images, like the PNGs a user sees, so cached and fresh samples give the same numbers.
        samples_uint8 = (generate_samples(pipe, num_samples, batch_size, seed, num_inference_steps) + 1) * 127.5
        samples_uint8 = samples_uint8.round().clamp(0, 255).to(torch.uint8)
        samples = samples_uint8.float() / 127.5 - 1
        if cache_file is not None:
            _save_whole({"samples": samples_uint8}, cache_file)
    sampling_seconds = time.perf_counter() - start
    report = score_samples(samples, dataset, features, seed, cache_dir, cache)
    report.update(
        scheduler=type(pipe.scheduler).__name__,
        # None: every training timestep; a distilled student's own count is what its call without one runs.
        num_inference_steps=num_inference_steps or pipe.config.get("default_num_inference_steps"),
        pipeline_hash=pipeline_hash(pipe),
        sampling_seconds=round(sampling_seconds, 1),
        seconds=round(time.perf_counter() - start, 1),
    )
    return report


def features_cache_dir(cache_dir=None) -> Path:
    """Where reference features are kept between runs: `features/` in the datasets' cache."""
    return (Path(cache_dir) if cache_dir is not None else default_cache_dir()) / "features"


def _fingerprint(*parts) -> str:
    """sha256 of tensors (dtype, shape and bytes) and plain values, in order."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            part = part.detach().cpu().contiguous()
            digest.update(f"{part.dtype}{tuple(part.shape)}".encode())
            digest.update(part.reshape(-1).view(torch.uint8).numpy().tobytes() if part.numel() else b"")
        else:
            digest.update(repr(part).encode())
    return digest.hexdigest()


def _samples_fingerprint(pipe, *settings) -> str:
    """What generated samples depend on: both configs, the unet's weights (a retrained model keeps its configs), the
    autocast dtype, the device type and the sampling settings (each batch is seeded from its index, so the batch
    size matters too)."""
    autocast = getattr(pipe, "autocast_dtype", None)
    scheduler = type(pipe.scheduler).__name__
    return _fingerprint(
        pipeline_hash(pipe), scheduler, str(autocast), pipe.device.type, *settings, *_named_tensors(pipe.unet)
    )


def _named_tensors(module) -> list:
    """A module's state as `_fingerprint` parts: each name, then its tensor, in name order."""
    state = module.state_dict()
    return [part for name in sorted(state) for part in (name, state[name])]


def _network_fingerprint(network) -> str:
    if not hasattr(network, "_ddpm_kiit_fingerprint"):  # hashing Inception's 24M weights takes a fraction of a second
        network._ddpm_kiit_fingerprint = _fingerprint(*_named_tensors(network))
    return network._ddpm_kiit_fingerprint


def reference_features(network, features: str, real_images, copy_images, floor_images, cache_folder: Path) -> tuple:
    """(features of the held-out images, features of the copy check's training images, the real-vs-real floor).

    Kept in `cache_folder` under a key hashed from the network's weights and the exact images, so a changed dataset,
    network or setting never reads stale features. The floor is scored from `floor_images` as before the cache
    existed, so scores are the same with and without it. An unreadable cache file is recomputed and replaced.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    key = _fingerprint(
        REFERENCE_FEATURES_VERSION, features, _network_fingerprint(network), real_images, copy_images, floor_images
    )
    path = Path(cache_folder) / f"reference-{key[:32]}.safetensors"
    if path.is_file():
        try:
            with safe_open(str(path), framework="pt") as handle:
                floor = json.loads(handle.metadata()["floor"])
            tensors = load_file(str(path))
            return tensors["real"], tensors["copy"], floor
        except (SafetensorError, OSError, KeyError, TypeError, ValueError) as error:
            logger.warning(f"Ignoring the unreadable feature cache {path} ({error}); computing the features again.")
    real = extract_features(network, real_images)
    copy_features = extract_features(network, copy_images)
    floor = score(real, extract_features(network, floor_images))
    try:
        _save_whole({"real": real, "copy": copy_features}, path, metadata={"floor": json.dumps(floor)})
    except OSError as error:
        logger.warning(f"Could not keep the reference features in {path.parent} ({error}); they are computed again.")
    return real, copy_features, floor


def _save_whole(tensors: Dict[str, torch.Tensor], path: Path, metadata: Optional[Dict[str, str]] = None):
    """Writes a safetensors file aside, then renames it: readers see the whole file or none, even after a crash."""
    from safetensors.torch import save_file

    with atomic_file(path) as partial:
        save_file(tensors, str(partial), metadata=metadata)


def score_samples(
    samples: torch.Tensor,
    dataset: str = "mnist",
    features: str = "classifier",
    seed: int = 0,
    cache_dir=None,
    cache: Optional[EvaluationCache] = None,
) -> Dict:
    """Scores `(n, C, H, W)` samples in [-1, 1] against n held-out images of `dataset`, beside the real-vs-real floor
    at the same n (n training images against the same held-out ones). Samples made elsewhere (another machine, a
    saved file) are scored exactly as `evaluate_pipeline` scores its own."""
    num_samples, channels, size = samples.shape[0], samples.shape[1], samples.shape[-1]
    test = reference_images(dataset, "test", channels, size, cache_dir)
    _check_n(num_samples, len(test), dataset)
    cache = cache or EvaluationCache()
    network = cache.network(features, dataset)
    train = reference_images(dataset, "train", channels, size, cache_dir)
    generator = torch.Generator().manual_seed(seed)
    real_index = torch.randperm(len(test), generator=generator)[:num_samples]
    train_index = torch.randperm(len(train), generator=generator)
    key = (features, dataset, str(cache_dir), channels, size, seed, num_samples)
    real, train_features, floor = cache.reference(
        key,
        lambda: reference_features(
            network,
            features,
            test[real_index],
            train[train_index[:COPY_CHECK_TRAIN_IMAGES]],
            train[train_index[:num_samples]],
            features_cache_dir(cache_dir),
        ),
    )
    fake = extract_features(network, samples)
    return {
        "scores": score(real, fake, train_features),
        "floor": floor,
        "num_samples": num_samples,
        "dataset": dataset,
        "features": features,
        "seed": seed,
    }


def format_report(report: Dict) -> str:
    """The report as a small table: each score beside its real-vs-real floor."""
    rows = [f"{'metric':<16}{'model':>12}{'real floor':>12}"]
    for key in ("fid", "kid_mean", "kid_std", "precision", "recall", "copy_fraction"):
        model = report["scores"].get(key)
        floor = report["floor"].get(key)
        rows.append(
            f"{key:<16}{'' if model is None else f'{model:.4g}':>12}{'' if floor is None else f'{floor:.4g}':>12}"
        )
    rows.append(
        f"n = {report['num_samples']}, {report['features']} features on {report['dataset']}, "
        f"{report['seconds']} s ({report['sampling_seconds']} s sampling)"
    )
    return "\n".join(rows)
