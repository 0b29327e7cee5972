"""Files from strangers: nothing runs code, broken files give clear errors."""

import json
import re
from pathlib import Path

import pytest

from ddpm_kiit import KiitDDPMPipeline, KiitDDPMScheduler, SimpleUNet2DModel

SRC = Path(__file__).resolve().parents[1] / "src" / "ddpm_kiit"


@pytest.fixture
def saved(tmp_path):
    unet = SimpleUNet2DModel(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(8, 16))
    KiitDDPMPipeline(unet=unet, scheduler=KiitDDPMScheduler()).save_pretrained(tmp_path)
    return tmp_path


def test_truncated_weights_are_refused(saved):
    weights = saved / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(OSError, match="Unable to load weights"):
        KiitDDPMPipeline.from_pretrained(saved)


def test_wrong_typed_config_value_is_named(saved):
    config_path = saved / "unet" / "config.json"
    config = json.loads(config_path.read_text())
    config["norm_type"] = 5
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"`norm_type` must be one of \('batch', 'group'\), got 5"):
        KiitDDPMPipeline.from_pretrained(saved)


def test_model_index_naming_a_foreign_module_is_refused_before_import(saved, monkeypatch):
    index_path = saved / "model_index.json"
    index = json.loads(index_path.read_text())
    original_unet = index["unet"]
    index["unet"] = ["evil_module_that_must_not_be_imported", "Payload"]
    index_path.write_text(json.dumps(index))
    import importlib

    real_import = importlib.import_module

    def guarded(name, *args, **kwargs):
        assert not name.startswith("evil_module"), "the foreign module was imported"
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", guarded)
    with pytest.raises(ValueError, match="only components from \\('ddpm_kiit', 'diffusers', 'transformers'\\)"):
        KiitDDPMPipeline.from_pretrained(saved)
    # a text encoder or tokenizer entry is checked the same way
    index["unet"] = original_unet
    index["tokenizer"] = ["evil_module_that_must_not_be_imported", "Payload"]
    index_path.write_text(json.dumps(index))
    with pytest.raises(
        ValueError, match="names \\['evil_module_that_must_not_be_imported', 'Payload'\\] for `tokenizer`"
    ):
        KiitDDPMPipeline.from_pretrained(saved)


def test_package_never_unpickles_unsafely_or_evaluates_code():
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        for match in re.finditer(r"torch\.load\(([^)]*)\)", text):
            assert "weights_only=True" in match.group(1), f"{path}: {match.group(0)}"
        assert not re.search(r"(?<![\w.])(eval|exec)\(", text), f"{path} calls eval/exec"
        assert "pickle.load(" not in text and "pickle.loads(" not in text, f"{path} unpickles without a whitelist"
