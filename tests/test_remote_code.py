"""Issue 23: a saved pipeline carries its own code, so stock Diffusers loads it with `trust_remote_code=True` where
ddpm-kiit is not installed, while with the package imported the same folder or repo loads with no remote code."""

import ast
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DiffusionPipeline
from diffusers.pipelines import pipeline_loading_utils
from diffusers.utils.dynamic_modules_utils import get_relative_imports
from fake_hub import fake_hub_fixture  # noqa: F401
from no_package import check, run_without_package, sample

import ddpm_kiit
from ddpm_kiit import (
    BlurringDiffusionScheduler,
    ColdDiffusionScheduler,
    GaussianBlurScheduler,
    KiitDDPMPipeline,
    KiitDDPMScheduler,
    KiitTextToImagePipeline,
    SimpleUNet2DModel,
    remote_code,
)
from ddpm_kiit.cli import main as cli
from ddpm_kiit.remote_code import ALLOWED_IMPORTS, REMOTE_MODULES, generate_module

TINY = {"sample_size": 16, "in_channels": 1, "out_channels": 1, "block_out_channels": (8, 16)}
GENERATED = [
    ("pipeline_kiit_ddpm.py", KiitDDPMPipeline),
    ("unet/unet_kiit_simple.py", SimpleUNet2DModel),
    ("scheduler/scheduling_kiit_ddpm.py", KiitDDPMScheduler),
    ("scheduler/scheduling_cold_diffusion.py", ColdDiffusionScheduler),
    ("scheduler/scheduling_blurring_diffusion.py", BlurringDiffusionScheduler),
    ("pipeline_kiit_text2img.py", KiitTextToImagePipeline),
]
BLUR_SCHEDULERS = {"cold": ColdDiffusionScheduler, "blurring_diffusion": BlurringDiffusionScheduler}


def _pipe(scheduler=None) -> KiitDDPMPipeline:
    torch.manual_seed(0)
    unet = SimpleUNet2DModel(**TINY).eval()
    return KiitDDPMPipeline(unet=unet, scheduler=scheduler or KiitDDPMScheduler(num_train_timesteps=20))


def _blur(process: str):
    scheduler = BLUR_SCHEDULERS[process](num_train_timesteps=10)
    if process == "cold":
        scheduler.fit_initial_distribution(torch.rand(32, 1, 16, 16, generator=torch.manual_seed(1)) * 2 - 1)
    return scheduler


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("remote") / "pipe"
    _pipe().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def blur_saved(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("remote") / "blur"
    _pipe(_blur("cold")).save_pretrained(folder)
    return folder


def _load_module(path: Path):
    """Imports a generated file under a name of its own, as Diffusers does (it needs nothing from ddpm_kiit)."""
    spec = importlib.util.spec_from_file_location(f"generated_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# What a saved folder holds


def test_saved_folder_names_its_generated_modules_in_diffusers_remote_code_form(saved):
    index = json.loads((saved / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_kiit_ddpm", "KiitDDPMPipeline"]
    assert index["unet"] == ["unet_kiit_simple", "SimpleUNet2DModel"]
    assert index["scheduler"] == ["scheduling_kiit_ddpm", "KiitDDPMScheduler"]
    for path in ("pipeline_kiit_ddpm.py", "unet/unet_kiit_simple.py", "scheduler/scheduling_kiit_ddpm.py"):
        assert (saved / path).is_file(), path


def test_a_stock_scheduler_swapped_in_stays_a_diffusers_component(tmp_path):
    pipe = _pipe()
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"]
    assert index["unet"] == ["unet_kiit_simple", "SimpleUNet2DModel"]
    assert not list((tmp_path / "scheduler").glob("*.py"))


@pytest.mark.parametrize("path, cls", GENERATED, ids=[path for path, _ in GENERATED])
def test_generated_modules_import_only_torch_diffusers_numpy_and_the_standard_library(path, cls):
    source = generate_module(cls.__module__, cls.__name__)
    libraries = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path} has a relative import: {ast.unparse(node)}"
            libraries.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            libraries.update(alias.name.split(".")[0] for alias in node.names)
    assert not {lib for lib in libraries if lib not in ALLOWED_IMPORTS and lib not in sys.stdlib_module_names}
    assert "ddpm_kiit" not in libraries and "PIL" not in libraries
    if "numpy" in libraries:  # the schedulers: NumPy comes with Diffusers, and the header says so
        assert "NumPy is a dependency of Diffusers" in source


@pytest.mark.parametrize("path, cls", GENERATED[:3], ids=[path for path, _ in GENERATED[:3]])
def test_diffusers_finds_no_other_file_to_fetch_for_a_generated_module(saved, path, cls):
    # Diffusers scans module files with regular expressions, not ast: it must see no relative import either.
    assert get_relative_imports(saved / path) == []


@pytest.mark.parametrize("path, cls", GENERATED, ids=[path for path, _ in GENERATED])
def test_generated_header_names_the_version_and_the_source_files(path, cls):
    header = generate_module(cls.__module__, cls.__name__).split('"""')[0]
    assert f"Generated by ddpm-kiit {ddpm_kiit.__version__}" in header and "Do not edit" in header
    source = cls.__module__.replace(".", "/") + ".py"
    assert source in " ".join(line.lstrip("# ") for line in header.splitlines())


def test_generated_modules_inline_what_they_need_from_other_package_modules():
    unet = generate_module(SimpleUNet2DModel.__module__, "SimpleUNet2DModel")
    for helper in ("class CBAM(", "class SelfAttentionBlock(", "class SinusoidalTimestepEmbedding("):
        assert helper in unet
    assert "ddpm_kiit/models/attention.py" in unet.split('"""')[0].replace("\n# ", " ")
    pipeline = generate_module(KiitDDPMPipeline.__module__, "KiitDDPMPipeline")
    assert "def native_bf16(" in pipeline  # from ddpm_kiit/devices.py
    assert "class DenoisingRecorder" not in pipeline and "write_model_card" not in pipeline


def test_generated_pipeline_refuses_to_save_and_says_to_install_the_package(saved):
    module = _load_module(saved / "pipeline_kiit_ddpm.py")
    pipe = module.KiitDDPMPipeline(unet=_pipe().unet, scheduler=KiitDDPMScheduler())
    with pytest.raises(NotImplementedError, match="needs the ddpm-kiit package: `pip install ddpm-kiit`"):
        pipe.save_pretrained("anywhere")
    with pytest.raises(NotImplementedError, match="push_to_hub needs the ddpm-kiit package"):
        pipe.push_to_hub("test-user/anything")


# With the package: no trust_remote_code, and nothing from the folder runs


def test_package_route_loads_the_new_layout_without_trust_remote_code(saved):
    expected = sample(_pipe())
    for pipe in (DiffusionPipeline.from_pretrained(saved), KiitDDPMPipeline.from_pretrained(saved)):
        assert type(pipe) is KiitDDPMPipeline
        assert type(pipe.unet) is SimpleUNet2DModel and type(pipe.scheduler) is KiitDDPMScheduler
        np.testing.assert_array_equal(sample(pipe), expected)


def test_package_route_never_runs_the_folders_code(saved, tmp_path):
    import shutil

    planted = tmp_path / "planted"
    shutil.copytree(saved, planted)
    for path, _ in GENERATED[:3]:
        (planted / path).write_text("raise SystemExit('the folder code ran')\n")
    assert type(DiffusionPipeline.from_pretrained(planted)) is KiitDDPMPipeline


def test_other_custom_code_still_needs_trust_remote_code(saved, tmp_path):
    import shutil

    foreign = tmp_path / "foreign"
    shutil.copytree(saved, foreign)
    index = json.loads((foreign / "model_index.json").read_text())
    index["_class_name"] = ["pipeline_kiit_ddpm", "SomeOtherPipeline"]  # our file name, not our class
    (foreign / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="Pass `trust_remote_code=True`"):
        DiffusionPipeline.from_pretrained(foreign)


def test_registering_twice_wraps_diffusers_once():
    wrapped = pipeline_loading_utils.get_class_from_dynamic_module
    ddpm_kiit._register_with_diffusers()
    assert pipeline_loading_utils.get_class_from_dynamic_module is wrapped
    assert not hasattr(wrapped._ddpm_kiit_original, "_ddpm_kiit_original")
    assert wrapped("anywhere", module_file="unet_kiit_simple.py", class_name="SimpleUNet2DModel") is SimpleUNet2DModel
    assert set(REMOTE_MODULES) == {cls.__name__ for _, cls in GENERATED}
    # what older versions wrote for both blur processes: the class that builds the new ones
    legacy = wrapped("anywhere", module_file="scheduling_gaussian_blur.py", class_name="GaussianBlurScheduler")
    assert legacy is GaussianBlurScheduler


def test_folders_saved_before_issue_23_load_exactly_as_before(saved, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(saved, old)
    for path, _ in GENERATED[:3]:
        (old / path).unlink()
    index = json.loads((old / "model_index.json").read_text())
    index.update(_class_name="KiitDDPMPipeline", unet=["ddpm_kiit", "SimpleUNet2DModel"])
    index.update(scheduler=["ddpm_kiit", "KiitDDPMScheduler"])
    (old / "model_index.json").write_text(json.dumps(index))
    expected = sample(_pipe())
    for pipe in (DiffusionPipeline.from_pretrained(old), KiitDDPMPipeline.from_pretrained(old)):
        assert type(pipe) is KiitDDPMPipeline and type(pipe.unet) is SimpleUNet2DModel
        np.testing.assert_array_equal(sample(pipe), expected)


# Without the package: stock Diffusers with trust_remote_code=True


def test_remote_route_without_the_package_gives_the_packages_images(saved, tmp_path):
    check(
        run_without_package(
            f"""
            from diffusers import DDIMScheduler, DiffusionPipeline

            pipe = DiffusionPipeline.from_pretrained({str(saved)!r}, trust_remote_code=True)
            assert type(pipe).__name__ == "KiitDDPMPipeline" and type(pipe).__module__.startswith("diffusers_modules")
            np.save("native.npy", sample(pipe))
            pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
            np.save("ddim.npy", sample(pipe))
            """,
            tmp_path,
        )
    )
    pipe = _pipe()
    np.testing.assert_array_equal(np.load(tmp_path / "native.npy"), sample(pipe))
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    np.testing.assert_array_equal(np.load(tmp_path / "ddim.npy"), sample(pipe))


def test_without_the_package_or_trust_remote_code_diffusers_says_to_pass_it(saved, tmp_path):
    process = check(
        run_without_package(
            f"""
            from diffusers import DiffusionPipeline

            try:
                DiffusionPipeline.from_pretrained({str(saved)!r})
            except ValueError as error:
                print("REFUSED:", error)
            """,
            tmp_path,
        )
    )
    assert "REFUSED:" in process.stdout
    assert "contains custom code" in process.stdout and "Pass `trust_remote_code=True`" in process.stdout


@pytest.mark.parametrize("process_name", ["cold", "blurring_diffusion"])
def test_blur_pipelines_load_both_ways(tmp_path, process_name):
    cls = BLUR_SCHEDULERS[process_name]
    folder = tmp_path / process_name
    _pipe(_blur(process_name)).save_pretrained(folder)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["scheduler"] == [REMOTE_MODULES[cls.__name__], cls.__name__]
    assert not (folder / "scheduler" / "scheduling_gaussian_blur.py").exists()
    expected = sample(_pipe(_blur(process_name)))
    package = DiffusionPipeline.from_pretrained(folder)
    assert type(package.scheduler) is cls
    np.testing.assert_array_equal(sample(package), expected)
    check(
        run_without_package(
            f"""
            from diffusers import DiffusionPipeline

            pipe = DiffusionPipeline.from_pretrained({str(folder)!r}, trust_remote_code=True)
            assert type(pipe.scheduler).__name__ == {cls.__name__!r}
            assert type(pipe.scheduler).__module__.startswith("diffusers_modules")
            assert pipe.scheduler.config == {dict(package.scheduler.config)!r}
            np.save("images.npy", sample(pipe))
            """,
            tmp_path,
        )
    )
    np.testing.assert_array_equal(np.load(tmp_path / "images.npy"), expected)


def test_the_blur_schedulers_share_their_operator_in_the_generated_modules():
    for cls in BLUR_SCHEDULERS.values():
        source = generate_module(cls.__module__, cls.__name__)
        assert (
            "class GaussianBlur:" in source and "class BlurSchedulerMixin(UnscaledModelInput, SchedulerMixin" in source
        )
        assert "class UnscaledModelInput:" in source
        assert "ddpm_kiit/schedulers/blur_operator.py" in source.split('"""')[0].replace("\n# ", " ")
        assert "GaussianBlurScheduler" not in source


# A repo pushed with `ddpm-kiit push`


def test_a_pushed_repo_loads_both_ways_from_the_hub(saved, fake_hub, tmp_path, monkeypatch):
    repo_id = "test-user/ddpm-kiit-remote"
    assert cli(["push", str(saved), repo_id, "--token", fake_hub.token]) == 0
    stored = set(fake_hub.repos[repo_id].files)
    assert {"pipeline_kiit_ddpm.py", "unet/unet_kiit_simple.py", "scheduler/scheduling_kiit_ddpm.py"} <= stored
    expected = sample(_pipe())
    monkeypatch.setenv("HF_TOKEN", fake_hub.token)
    process = run_without_package(
        f"""
        from diffusers import DiffusionPipeline

        pipe = DiffusionPipeline.from_pretrained({repo_id!r}, trust_remote_code=True)
        assert type(pipe).__module__.startswith("diffusers_modules")
        np.save("hub.npy", sample(pipe))
        """,
        tmp_path,
    )
    check(process)
    np.testing.assert_array_equal(np.load(tmp_path / "hub.npy"), expected)
    for pipe in (DiffusionPipeline.from_pretrained(repo_id), KiitDDPMPipeline.from_pretrained(repo_id)):
        assert type(pipe) is KiitDDPMPipeline
        np.testing.assert_array_equal(sample(pipe), expected)


def test_index_helpers_read_both_layouts(saved):
    from ddpm_kiit.remote_code import pipeline_class_name, remote_code_paths

    index = json.loads((saved / "model_index.json").read_text())
    assert pipeline_class_name(index) == "KiitDDPMPipeline"
    assert sorted(remote_code_paths(index)) == [p for p, _ in sorted(GENERATED[:3])]
    old = {"_class_name": "KiitDDPMPipeline", "unet": ["ddpm_kiit", "SimpleUNet2DModel"]}
    assert pipeline_class_name(old) == "KiitDDPMPipeline" and remote_code_paths(old) == []
    assert remote_code_paths({"_class_name": ["evil", "KiitDDPMPipeline"], "unet": ["evil", "Payload"]}) == []
    # the module that older versions wrote for both blur processes
    legacy = {"scheduler": ["scheduling_gaussian_blur", "GaussianBlurScheduler"]}
    assert remote_code_paths(legacy) == ["scheduler/scheduling_gaussian_blur.py"]


# The generator's rules, on a package of its own


@pytest.fixture
def toy_package(tmp_path, monkeypatch):
    """A package `toypkg` whose `main.Toy` needs a helper from `toypkg.helpers`; tests add methods to it."""
    root = tmp_path / "toypkg"
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "helpers.py").write_text("import math\n\n\ndef double(x):\n    return 2 * x + math.pi * 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(methods: str):
        imports = (
            "import torch\n\nfrom ddpm_kiit.remote_code import needs_package, package_only\n\n"
            "from .helpers import double\n"
        )
        body = imports + "\n\nclass Toy(torch.nn.Module):\n" + methods
        (root / "main.py").write_text(body)
        for name in ("toypkg.main", "toypkg.helpers", "toypkg"):
            sys.modules.pop(name, None)
        generate_module.cache_clear()
        remote_code._module.cache_clear()  # the parsed sources
        return lambda: generate_module("toypkg.main", "Toy")

    yield write
    for name in ("toypkg.main", "toypkg.helpers", "toypkg"):
        sys.modules.pop(name, None)
    generate_module.cache_clear()
    remote_code._module.cache_clear()


def test_generator_inlines_helpers_and_handles_marked_methods(toy_package):
    source = toy_package(
        "    def twice(self, x):\n        return double(x)\n\n"
        "    @package_only\n    def gone(self):\n        from .helpers import double\n\n"
        "    @needs_package\n    def save(self):\n        from .helpers import double\n"
    )()
    assert source.index("def double(x):") < source.index("class Toy(")
    assert "def gone" not in source and "from .helpers" not in source
    assert "def save(self, *args, **kwargs):" in source and "needs the ddpm-kiit package" in source
    assert "toypkg/main.py" in source.split('"""')[0] and "toypkg/helpers.py" in source.split('"""')[0]


def test_generator_refuses_a_package_import_inside_an_unmarked_method(toy_package):
    generate = toy_package("    def save(self):\n        from .helpers import double\n")
    with pytest.raises(
        ValueError, match=r"`Toy` in toypkg/main.py runs `from .helpers import double` inside a function"
    ):
        generate()


def test_generator_refuses_libraries_other_than_torch_diffusers_numpy(toy_package):
    generate = toy_package("    def show(self):\n        import PIL\n")
    with pytest.raises(ValueError, match="imports only torch, diffusers, numpy and the standard library"):
        generate()
