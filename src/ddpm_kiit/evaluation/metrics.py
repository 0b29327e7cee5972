"""Sample-quality metrics on feature vectors: FID, KID, k-NN precision and recall, and a copy check; and one on
pixels, `edge_share`, for how sharp drawn edges are.

The feature metrics take two `(n, d)` feature tensors and compute in float64. They are written here rather than
taken from torchmetrics because torchmetrics' image metrics default to an Inception network that needs torchvision
(which does not import beside the CPU torch this project pins), and because precision/recall and the copy check are
not in it. `tests/test_evaluation.py` checks FID against torchmetrics on the same features.
"""

from typing import Dict

import torch


def _check_features(real: torch.Tensor, fake: torch.Tensor):
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"Features must be two (n, d) tensors with the same d; got {tuple(real.shape)} and {tuple(fake.shape)}."
        )
    if min(len(real), len(fake)) < 2:
        raise ValueError("Need at least 2 samples on each side to compare distributions.")


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID (Heusel et al. 2017): |mu_r - mu_f|^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2)).

    Tr((S_r S_f)^(1/2)) is the sum of the square roots of the eigenvalues of S_r^(1/2) S_f S_r^(1/2), a symmetric
    PSD matrix, so it is computed with `eigvalsh` instead of a general matrix square root.
    """
    _check_features(real, fake)
    real, fake = real.double(), fake.double()
    mu_r, mu_f = real.mean(0), fake.mean(0)
    cov_r, cov_f = torch.cov(real.T), torch.cov(fake.T)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov_r)
    sqrt_cov_r = eigenvectors @ torch.diag(eigenvalues.clamp(min=0).sqrt()) @ eigenvectors.T
    middle = sqrt_cov_r @ cov_f @ sqrt_cov_r
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    value = (mu_r - mu_f).square().sum() + cov_r.trace() + cov_f.trace() - 2 * trace_sqrt
    return max(float(value), 0.0)


def kernel_inception_distance(
    real: torch.Tensor, fake: torch.Tensor, subset_size: int = 1000, num_subsets: int = 100, seed: int = 0
) -> Dict[str, float]:
    """KID (Binkowski et al. 2018): the unbiased MMD^2 with the kernel k(x, y) = (x.y / d + 1)^3, averaged over random
    subsets; returns its mean and standard deviation over the subsets. Subsets hold at most half of the smaller set,
    so that they differ and the standard deviation means something at small n."""
    _check_features(real, fake)
    real, fake = real.double(), fake.double()
    size = max(2, min(subset_size, len(real) // 2, len(fake) // 2))
    dim = real.shape[1]
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(num_subsets):
        x = real[torch.randperm(len(real), generator=generator)[:size]]
        y = fake[torch.randperm(len(fake), generator=generator)[:size]]
        k_xx, k_yy, k_xy = (((a @ b.T) / dim + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        off_diagonal = size * (size - 1)
        mmd = (k_xx.sum() - k_xx.diagonal().sum()) / off_diagonal
        mmd = mmd + (k_yy.sum() - k_yy.diagonal().sum()) / off_diagonal - 2 * k_xy.mean()
        values.append(float(mmd))
    values = torch.tensor(values, dtype=torch.float64)
    return {"kid_mean": float(values.mean()), "kid_std": float(values.std()) if len(values) > 1 else 0.0}


def _kth_neighbour_radius(features: torch.Tensor, k: int) -> torch.Tensor:
    distances = torch.cdist(features, features)
    return distances.kthvalue(k + 1, dim=1).values  # +1: the point itself is at distance 0


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> Dict[str, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): the share of generated samples inside the k-NN
    balls of the real ones, and the share of real samples inside the k-NN balls of the generated ones."""
    _check_features(real, fake)
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples on each side.")
    real, fake = real.double(), fake.double()
    real_radius, fake_radius = _kth_neighbour_radius(real, k), _kth_neighbour_radius(fake, k)
    distances = torch.cdist(fake, real)  # (n_fake, n_real)
    precision = (distances <= real_radius[None, :]).any(dim=1).double().mean()
    recall = (distances.T <= fake_radius[None, :]).any(dim=1).double().mean()
    return {"precision": float(precision), "recall": float(recall)}


def copy_fraction(train: torch.Tensor, fake: torch.Tensor) -> float:
    """The share of generated samples that sit closer to a training sample than that training sample's own nearest
    training neighbour is: 0 for a model that never copies, near 1 for one that reproduces its training set."""
    _check_features(train, fake)
    train, fake = train.double(), fake.double()
    nearest_train_gap = _kth_neighbour_radius(train, 1)
    distances, index = torch.cdist(fake, train).min(dim=1)
    return float((distances < nearest_train_gap[index]).double().mean())


def edge_share(images: torch.Tensor, jump: float = 0.25) -> float:
    """The share of horizontally and vertically neighbouring pixel pairs of `(n, C, H, W)` images in [-1, 1] whose
    largest channel difference exceeds `jump` of the [0, 1] range. A sharp edge is one such jump; blur spreads it over
    several smaller steps under the threshold, so soft images score low (total variation would not tell: it stays
    the same under blur). Compare images at one resolution: enlarging an image spreads its jumps too."""
    if images.ndim != 4:
        raise ValueError(f"`images` must be (n, channels, height, width), got shape {tuple(images.shape)}.")
    images = (images.double() + 1) / 2
    across = (images[..., :, 1:] - images[..., :, :-1]).abs().amax(dim=1)
    down = (images[..., 1:, :] - images[..., :-1, :]).abs().amax(dim=1)
    jumps = (across > jump).sum() + (down > jump).sum()
    return jumps.item() / (across.numel() + down.numel())
