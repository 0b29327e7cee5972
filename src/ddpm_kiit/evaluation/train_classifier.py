"""Trains the small classifiers whose penultimate layer is the feature space of `ddpm-kiit evaluate`."""

import os
from pathlib import Path
from typing import Dict, Optional

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..data import ImageTransform, dataset_to_tensor, load_image_dataset
from ..io_utils import atomic_file
from .features import CLASSIFIER_DATASETS, DigitClassifier, classifier_weights_path


def _labelled_tensors(dataset_name: str, split: str, cache_dir=None):
    dataset = load_image_dataset(dataset_name, split=split, cache_dir=cache_dir)
    if "label" not in dataset.column_names:
        raise ValueError(f"{dataset_name!r} has no labels to train a classifier on.")
    return dataset_to_tensor(dataset, ImageTransform(32, 1)), torch.tensor(dataset["label"])


@torch.no_grad()
def accuracy(model: DigitClassifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    model.eval()
    correct = sum(
        (model(images[i : i + batch_size]).argmax(1) == labels[i : i + batch_size]).sum().item()
        for i in range(0, len(images), batch_size)
    )
    return correct / len(images)


def train_classifier(
    dataset_name: str,
    epochs: int = 20,
    batch_size: int = 128,
    learning_rate: float = 2e-3,
    seed: int = 0,
    output: Optional[os.PathLike] = None,
    cache_dir=None,
) -> Dict[str, float]:
    """Trains on the dataset's train split, measures accuracy on its held-out test split, saves safetensors.

    Light augmentation (random shifts of up to 2 pixels) keeps it from memorising the 4,500 digits of `mnist`.
    """
    from safetensors.torch import save_file

    if dataset_name not in CLASSIFIER_DATASETS:
        raise ValueError(f"Classifiers are trained for {CLASSIFIER_DATASETS}, not {dataset_name!r}.")
    torch.manual_seed(seed)
    train_x, train_y = _labelled_tensors(dataset_name, "train", cache_dir)
    test_x, test_y = _labelled_tensors(dataset_name, "test", cache_dir)
    model = DigitClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    steps = epochs * (len(train_x) // batch_size)
    lr_schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, learning_rate, total_steps=steps)
    progress = tqdm(total=steps, desc=f"Classifier ({dataset_name})")
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(train_x))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            index = order[start : start + batch_size]
            shifts = torch.randint(-2, 3, (2,))
            images = torch.roll(train_x[index], shifts=(int(shifts[0]), int(shifts[1])), dims=(2, 3))
            loss = F.cross_entropy(model(images), train_y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            lr_schedule.step()
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.3f}")
    progress.close()
    result = {"test_accuracy": accuracy(model, test_x, test_y), "train_accuracy": accuracy(model, train_x, train_y)}
    output = Path(output) if output is not None else classifier_weights_path(dataset_name)
    with atomic_file(output) as partial:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(partial))
    result["path"] = str(output)
    return result
