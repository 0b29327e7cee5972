"""Real image folders: unreadable files stop the run before anything is written; odd files that decode are
converted the way a person sees them."""

import io

import numpy as np
import pytest
from PIL import Image
from test_training import tiny_args

from ddpm_kiit.cli import train_main
from ddpm_kiit.data import BadImagesError, ImageTransform, dataset_to_tensor, load_image_dataset, to_mode

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def _folder(tmp_path, good: int = 12, truncated=(), garbage=()):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(good):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(folder / f"good-{i:02d}.png")
    for name in truncated:
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(buffer, "PNG")
        (folder / name).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    for name in garbage:
        (folder / name).write_bytes(b"this is not an image")
    return folder


def _train_on(tmp_path, folder, *extra):
    args = tiny_args(tmp_path, "--max_train_steps", "1", *extra)
    index = args.index("--dataset_name")
    del args[index : index + 2]
    return train_main([*args, "--train_data_dir", str(folder)])


def test_a_truncated_image_stops_the_run_naming_it_and_writes_nothing(tmp_path, capsys):
    folder = _folder(tmp_path, truncated=["cut.png"], garbage=["fake.jpg"])
    assert _train_on(tmp_path, folder) == 2
    error = capsys.readouterr().err
    assert "2 of 14 images cannot be read" in error
    assert f"{folder / 'cut.png'} (OSError: image file is truncated" in error
    assert f"{folder / 'fake.jpg'} (UnidentifiedImageError" in error
    assert "pass --skip_bad_images to train without them" in error
    assert not (tmp_path / "out").exists()


def test_more_than_ten_bad_images_are_listed_ten_and_counted(tmp_path):
    folder = _folder(tmp_path, good=2, garbage=[f"bad-{i:02d}.png" for i in range(13)])
    dataset = load_image_dataset(train_data_dir=folder)
    with pytest.raises(BadImagesError, match=r"13 of 15 images cannot be read") as error:
        dataset_to_tensor(dataset, ImageTransform(16, 3))
    assert str(error.value).count("UnidentifiedImageError") == 10 and "... and 3 more" in str(error.value)
    assert len(error.value.sources) == 13


def test_skip_bad_images_trains_on_the_rest_and_says_how_many(tmp_path, caplog):
    folder = _folder(tmp_path, truncated=["cut.png"])
    dataset = load_image_dataset(train_data_dir=folder)
    assert dataset_to_tensor(dataset, ImageTransform(16, 3), skip_bad_images=True).shape == (12, 3, 16, 16)
    assert _train_on(tmp_path, folder, "--skip_bad_images") == 0
    assert "Skipped 1 of 13 images that cannot be read" in caplog.text
    assert (tmp_path / "out" / "model_index.json").is_file()


def test_palette_images_convert_to_their_colours():
    palette = Image.new("P", (4, 4))
    palette.putpalette([255, 0, 0] + [0, 0, 255] * 255)
    assert to_mode(palette, "RGB").getpixel((0, 0)) == (255, 0, 0)


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 16384], [32768, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)  # a 16-bit greyscale PNG
    with Image.open(path) as image:
        assert image.mode.startswith("I")
        grey = np.asarray(to_mode(image, "L"))
    np.testing.assert_array_equal(grey, np.round(values / 65535 * 255).astype(np.uint8))


def test_cmyk_converts_to_rgb():
    cmyk = Image.new("CMYK", (2, 2), (0, 255, 255, 0))  # full magenta and yellow ink: red
    assert to_mode(cmyk, "RGB").getpixel((0, 0)) == (255, 0, 0)


def test_exif_rotation_is_applied(tmp_path):
    wide = Image.new("RGB", (6, 2), (0, 0, 0))
    wide.putpixel((0, 0), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "phone.jpg"
    wide.save(path, exif=exif, quality=100)
    with Image.open(path) as image:
        shown = to_mode(image, "RGB")
    assert shown.size == (2, 6)  # upright, as a viewer shows it
    assert shown.getpixel((1, 0))[0] > 200  # the top-left corner went to the top right


def test_transparency_is_composited_on_white():
    clear = Image.new("RGBA", (2, 2), (0, 0, 0, 0))  # black, but fully transparent
    assert to_mode(clear, "RGB").getpixel((0, 0)) == (255, 255, 255)
    assert to_mode(clear, "L").getpixel((0, 0)) == 255
