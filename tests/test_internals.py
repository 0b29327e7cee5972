"""The private parts of Diffusers and huggingface_hub that ddpm-kiit relies on. pyproject.toml caps both packages
at the newest versions tested; when a newer one is tried, these tests say which internal moved."""

import inspect
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
FAKE_HUB = "tests/fake_hub.py"


def _moved(package, name: str, users: str) -> str:
    return (
        f"{name} moved or changed in {package.__name__} {package.__version__}; {users} relies on it. Adapt that "
        f"code, then raise the {package.__name__} bound in pyproject.toml."
    )


def test_diffusers_loadable_classes_still_register_libraries():
    import diffusers
    from diffusers.pipelines import pipeline_loading_utils

    name = "diffusers.pipelines.pipeline_loading_utils.LOADABLE_CLASSES"
    message = _moved(diffusers, name, "ddpm_kiit.__init__._register_with_diffusers")
    table = getattr(pipeline_loading_utils, "LOADABLE_CLASSES", None)
    assert isinstance(table, dict) and "diffusers" in table and "transformers" in table, message
    assert table["diffusers"].get("ModelMixin") == ["save_pretrained", "from_pretrained"], message
    import ddpm_kiit

    assert "ddpm_kiit" in table and table["ddpm_kiit"] is not None, message
    assert diffusers.KiitDDPMPipeline is ddpm_kiit.KiitDDPMPipeline, message


def test_diffusers_still_loads_custom_modules_through_get_class_from_dynamic_module():
    import diffusers
    from diffusers.pipelines import pipeline_loading_utils

    name = "diffusers.pipelines.pipeline_loading_utils.get_class_from_dynamic_module"
    message = _moved(diffusers, name, "ddpm_kiit.__init__._use_installed_classes_for_generated_modules")
    import ddpm_kiit

    wrapped = getattr(pipeline_loading_utils, "get_class_from_dynamic_module", None)
    assert getattr(wrapped, "_ddpm_kiit_original", None) is not None, message
    # The loaders look the module global up at each call: wrapping it reaches the pipeline and its components.
    for user in ("_get_custom_pipeline_class", "get_class_obj_and_candidates"):
        function = getattr(pipeline_loading_utils, user, None)
        assert function is not None and "get_class_from_dynamic_module" in function.__code__.co_names, message
    parameters = inspect.signature(wrapped._ddpm_kiit_original).parameters
    assert {"pretrained_model_name_or_path", "module_file", "class_name"} <= set(parameters), message
    assert wrapped(".", module_file="pipeline_kiit_ddpm.py", class_name="KiitDDPMPipeline") is (
        ddpm_kiit.KiitDDPMPipeline
    ), message


def test_diffusers_from_config_still_records_use_default_values():
    import diffusers
    from diffusers import DDPMScheduler

    message = _moved(diffusers, "ConfigMixin's `_use_default_values` config key", "our schedulers' __init__")
    config = dict(DDPMScheduler().config)
    config.pop("beta_end")
    rebuilt = DDPMScheduler.from_config(config)
    assert "beta_end" in rebuilt.config.get("_use_default_values", []), message


def test_the_huggingface_hub_constants_the_loopback_hub_patches_still_exist():
    import huggingface_hub
    import huggingface_hub.hf_api
    from huggingface_hub import constants

    for name in (
        "ENDPOINT",
        "HUGGINGFACE_CO_URL_TEMPLATE",
        "HF_HOME",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_TOKEN_PATH",
        "HF_STORED_TOKENS_PATH",
        "HF_HUB_OFFLINE",
        "HF_HUB_DISABLE_TELEMETRY",
        "HF_HUB_DISABLE_XET",
    ):
        assert hasattr(constants, name), _moved(
            huggingface_hub, f"huggingface_hub.constants.{name}", "tests/fake_hub.py"
        )
    api = getattr(huggingface_hub.hf_api, "api", None)
    assert hasattr(api, "endpoint"), _moved(
        huggingface_hub, "huggingface_hub.hf_api.api.endpoint", "tests/fake_hub.py"
    )


@pytest.mark.parametrize("distribution", ["diffusers", "huggingface_hub"])
def test_installed_versions_are_inside_the_declared_and_tested_range(distribution):
    from importlib.metadata import version

    from packaging.requirements import Requirement

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    requirement = next(Requirement(r) for r in declared if Requirement(r).name.replace("-", "_") == distribution)
    assert any(spec.operator in ("<", "<=") for spec in requirement.specifier), (
        f"pyproject.toml declares {requirement} with no upper bound: cap it at the newest version tested."
    )
    installed = version(distribution)
    assert requirement.specifier.contains(installed, prereleases=True), (
        f"{distribution} {installed} is installed but pyproject.toml declares {requirement}."
    )
