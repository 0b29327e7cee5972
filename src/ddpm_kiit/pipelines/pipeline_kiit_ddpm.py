# Copyright 2026 The ddpm-kiit authors. Licensed under the Apache License, Version 2.0.
"""Image generation, unconditional or class-conditional, with a SimpleUNet (or any UNet2DModel-like model) and any
Diffusers scheduler."""

import contextlib
import inspect
import math
import os
import tempfile
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils import logging
from diffusers.utils.torch_utils import randn_tensor

from ..devices import native_bf16
from ..remote_code import is_generated_entry, needs_package, package_only

logger = logging.get_logger(__name__)

OUTPUT_TYPES = ("pil", "np", "pt")
# The smallest scale of the measured sweeps at which the shipped class model draws the asked class >= 99% of the time
# (99.7%, all-class FID below the unconditional model's: docs/conditioning.md, benchmarks/class_guidance.py); larger
# scales trade diversity for accuracy.
DEFAULT_GUIDANCE_SCALE = 1.5


@dataclass
class ClassifierFreeGuidance:
    """
    Classifier-free guidance (Ho & Salimans 2022, eq. 6, written as in Diffusers): the prediction is
    uncond + scale * (cond - uncond), where `conditional` and `unconditional` are the unet's keyword arguments for the
    asked condition and for "no condition" (the null label, the empty prompt). Scale 1 is the conditional model alone
    and runs only that half; scale 0 only the unconditional half; any other scale runs both halves as one batch.
    For a model that also predicts its variance (2C outputs), only the first C channels are guided.
    """

    conditional: Dict
    unconditional: Optional[Dict] = None
    scale: float = 1.0

    def predict(self, unet, sample: torch.Tensor, timestep) -> torch.Tensor:
        if self.unconditional is None or self.scale == 1:
            return unet(sample, timestep, **self.conditional).sample
        if self.scale == 0:
            return unet(sample, timestep, **self.unconditional).sample
        both = {key: torch.cat([self.unconditional[key], self.conditional[key]]) for key in self.conditional}
        unconditional, conditional = unet(torch.cat([sample, sample]), timestep, **both).sample.chunk(2)
        channels = sample.shape[1]
        guided = unconditional[:, :channels] + self.scale * (conditional[:, :channels] - unconditional[:, :channels])
        return torch.cat([guided, conditional[:, channels:]], dim=1)


def only_variant(folder) -> Optional[str]:
    """The weights variant of a local pipeline folder whose unet has only variant weights (`*.fp16.safetensors`),
    else None."""
    unet = os.path.join(str(folder), "unet")
    if not os.path.isdir(unet):
        return None
    weights = [name for name in os.listdir(unet) if name.endswith(".safetensors")]
    variants = {name.split(".")[-2] for name in weights if name.count(".") >= 2}
    if weights and len(variants) == 1 and all(name.count(".") >= 2 for name in weights):
        return variants.pop()
    return None


def check_timestep_list(timesteps, num_train_timesteps: int, name: str = "timesteps") -> List[int]:
    """`timesteps` as a list of distinct integers in [0, `num_train_timesteps`), noisiest first; else a clear error."""
    values = timesteps.tolist() if torch.is_tensor(timesteps) else timesteps
    if (
        not isinstance(values, (list, tuple))
        or not values
        or any(isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < num_train_timesteps for t in values)
        or any(a <= b for a, b in zip(values, values[1:]))
    ):
        raise ValueError(
            f"`{name}` must be a non-empty list of integers in [0, {num_train_timesteps - 1}] in decreasing order "
            f"(the noisiest first, e.g. [{num_train_timesteps - 1}, {num_train_timesteps * 3 // 4 - 1}]), got "
            f"{timesteps!r}."
        )
    return list(values)


def takes_custom_timesteps(scheduler) -> bool:
    """Whether `scheduler.set_timesteps` takes a `timesteps` list (DPMSolverMultistepScheduler, DDPMScheduler, LCM,
    TCD, ...; not DDIMScheduler)."""
    return "timesteps" in inspect.signature(scheduler.set_timesteps).parameters


def check_guidance_scale(guidance_scale) -> float:
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)):
        raise ValueError(f"`guidance_scale` must be a number >= 0, got {guidance_scale!r}.")
    if not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise ValueError(
            f"`guidance_scale` must be a finite number >= 0 (0: unconditional, 1: the conditional model alone, "
            f"larger: stronger guidance), got {guidance_scale!r}."
        )
    return float(guidance_scale)


EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> from ddpm_kiit import KiitDDPMPipeline
        >>> from diffusers import DDIMScheduler

        >>> pipe = KiitDDPMPipeline.from_pretrained("path/to/pipeline")
        >>> images = pipe(batch_size=4, generator=torch.manual_seed(0)).images
        >>> # any stock scheduler drops in, with the same betas
        >>> pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        >>> images = pipe(batch_size=4, num_inference_steps=50, generator=torch.manual_seed(0)).images
        ```
"""


class KiitDDPMPipeline(DiffusionPipeline):
    r"""
    Pipeline for unconditional image generation with the models of the KIIT DDPM talk.

    One pipeline serves every forward process: the loop (scale input, predict, `scheduler.step`) is the same for
    noise and for blur, and the only difference, where sampling starts, belongs to the scheduler. A scheduler that
    defines `initial_sample` (our blur schedulers) provides x_T; the others start from Gaussian noise scaled
    by `init_noise_sigma`. A second pipeline class would duplicate the loop and force users to pick the class by
    scheduler.

    Parameters:
        unet ([`SimpleUNet2DModel`] or [`~diffusers.UNet2DModel`]): Predicts the noise (or x0, or v) of a noisy image.
        scheduler ([`SchedulerMixin`]): [`KiitDDPMScheduler`] or any stock Diffusers scheduler, e.g.
            `DDIMScheduler.from_config(pipe.scheduler.config)`.
        default_num_inference_steps (`int`, *optional*): The step count a call without `num_inference_steps` runs
            (saved in `model_index.json`). `None`, the default, runs every training timestep; a distilled student
            ([`ddpm_kiit.training.distill`]) names the few steps it was trained for.
        default_timesteps (`List[int]`, *optional*): The grid a student distilled on a grid of its own (`ddpm-kiit
            distill --timesteps`) was trained for, noisiest first (saved in `model_index.json`): a call for
            `len(default_timesteps)` steps, or for none, runs on it, where the scheduler takes custom timesteps.
    """

    model_cpu_offload_seq = "unet"
    _callback_tensor_inputs = ["latents", "pred_original_sample", "model_output"]

    def __init__(
        self,
        unet,
        scheduler,
        default_num_inference_steps: Optional[int] = None,
        default_timesteps: Optional[List[int]] = None,
    ):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)
        if default_timesteps is not None:
            default_timesteps = check_timestep_list(
                default_timesteps, scheduler.config.num_train_timesteps, "default_timesteps"
            )
            if default_num_inference_steps not in (None, len(default_timesteps)):
                raise ValueError(
                    f"`default_num_inference_steps`={default_num_inference_steps} disagrees with the "
                    f"{len(default_timesteps)} `default_timesteps` {default_timesteps}; pass one of them."
                )
            default_num_inference_steps = len(default_timesteps)
            self.register_to_config(default_timesteps=default_timesteps)
        if default_num_inference_steps is not None:
            steps = default_num_inference_steps
            if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
                raise ValueError(f"`default_num_inference_steps` must be a positive integer or None, got {steps!r}.")
            # Recorded only where set, so that the folders of every other pipeline stay as they were.
            self.register_to_config(default_num_inference_steps=steps)
        self._autocast_dtype = None
        self._inference_mode = False

    def enable_fast_inference(
        self,
        channels_last: bool = True,
        autocast_dtype: Union[str, torch.dtype, None] = "auto",
        inference_mode: bool = True,
        compile: bool = False,
    ) -> "KiitDDPMPipeline":
        r"""
        Speeds up sampling; each option can be turned off. Measured by `benchmarks/inference_speed.py`.

        Args:
            channels_last (`bool`, defaults to `True`): Store the unet's weights (and so its activations) as NHWC,
                the layout oneDNN and cuDNN convolutions prefer. Exact.
            autocast_dtype (`torch.dtype` or `"auto"`, *optional*, defaults to `"auto"`): Run the unet under
                `torch.autocast` in this dtype (bf16 uses AMX on recent Intel CPUs and tensor cores on GPUs); the
                latents and the scheduler stay in float32. Not exact: check the quality with `ddpm-kiit evaluate`.
                `"auto"` picks bf16 where the pipeline's device computes it natively, float32 elsewhere; `None`
                keeps float32.
            inference_mode (`bool`, defaults to `True`): Sample under `torch.inference_mode()` instead of
                `torch.no_grad()` (no version counters or views tracking). Exact.
            compile (`bool`, defaults to `False`): `torch.compile` the unet; the first call pays the compile time
                (seconds on a CPU). Without autocast it computes what eager float32 does, up to rounding.

        BatchNorm is not folded: in the talk's blocks it follows the ReLU and feeds a zero-padded convolution, so
        folding it into that convolution changes the border pixels (tested in `tests/test_fast_inference.py`).
        """
        if channels_last:
            self.unet.to(memory_format=torch.channels_last)
        if autocast_dtype == "auto":
            autocast_dtype = torch.bfloat16 if native_bf16(self.device.type) else None
        if autocast_dtype is not None and autocast_dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(
                f"`autocast_dtype` must be 'auto', torch.bfloat16, torch.float16 or None, got {autocast_dtype}."
            )
        self._autocast_dtype = autocast_dtype
        self._inference_mode = inference_mode
        if compile:
            self.unet.compile()
        return self

    @property
    def default_inference_steps(self) -> int:
        """The step count of a call without `num_inference_steps` or `timesteps`: a distilled student's own
        (`default_num_inference_steps`), else every training timestep."""
        return self.config.get("default_num_inference_steps") or self.scheduler.config.num_train_timesteps

    @property
    def autocast_dtype(self) -> Optional[torch.dtype]:
        """The dtype the unet runs in under autocast (set by `enable_fast_inference`), or `None` for no autocast."""
        return self._autocast_dtype

    # Libraries a saved pipeline may name for its components. Diffusers imports whatever module `model_index.json`
    # names before it finds out that it cannot load it; we refuse anything else first. The modules that ddpm-kiit
    # generates (`["unet_kiit_simple", "SimpleUNet2DModel"]`, ...) are allowed too: with the package imported,
    # Diffusers maps them to the package's classes and never runs the files.
    allowed_component_libraries = ("ddpm_kiit", "diffusers", "transformers")

    @classmethod
    @package_only
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Loads like [`DiffusionPipeline.from_pretrained`], after checking that `model_index.json` names only
        `ddpm_kiit`, `diffusers` or `transformers` components, or the modules ddpm-kiit writes beside the weights (a
        folder from a stranger could name any importable module). A folder of a subclass (a
        [`KiitTextToImagePipeline`]) loads as that subclass."""
        import json

        from ..remote_code import pipeline_class_name

        index_path = os.path.join(str(pretrained_model_name_or_path), "model_index.json")
        if not os.path.isfile(index_path) and not os.path.isdir(str(pretrained_model_name_or_path)):
            from huggingface_hub import hf_hub_download

            hub_kwargs = {k: kwargs[k] for k in ("revision", "token", "cache_dir", "local_files_only") if k in kwargs}
            index_path = hf_hub_download(str(pretrained_model_name_or_path), "model_index.json", **hub_kwargs)
        if os.path.isfile(index_path):
            with open(index_path) as f:
                index = json.load(f)
            for component, entry in index.items():
                # A component is a (library, class) pair; settings such as `default_timesteps` hold other values.
                if (
                    component.startswith("_")
                    or not isinstance(entry, list)
                    or not entry
                    or not isinstance(entry[0], str)
                ):
                    continue
                library = str(entry[0]).split(".")[0]
                if not is_generated_entry(entry) and library not in cls.allowed_component_libraries:
                    raise ValueError(
                        f"model_index.json names {entry} for `{component}`; only components from "
                        f"{cls.allowed_component_libraries} are loaded. Check where this pipeline came from."
                    )
            subclass = {c.__name__: c for c in cls.__subclasses__()}.get(pipeline_class_name(index))
            if subclass is not None:
                return subclass.from_pretrained(pretrained_model_name_or_path, **kwargs)
        variant = None if "variant" in kwargs else only_variant(pretrained_model_name_or_path)
        if variant is not None:
            # A folder that holds only half-precision weights (the shipped ones): load those, as stock Diffusers does
            # when told the variant (the unet in float32; a `transformers` text encoder stays in float16).
            kwargs["variant"] = variant
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @needs_package
    def save_pretrained(self, save_directory, *args, model_card_kwargs: Optional[Dict] = None, **kwargs):
        """Saves like [`DiffusionPipeline.save_pretrained`], plus the pipeline's code and our model card.

        Beside the weights go self-contained modules generated from the package's source (the pipeline's at the
        root, the unet's in `unet/`, our scheduler's in `scheduler/`), named in `model_index.json` so that stock
        Diffusers loads the folder with `trust_remote_code=True` where ddpm-kiit is not installed
        ([`ddpm_kiit.remote_code`]), and the card as `README.md`. `model_card_kwargs` go to
        [`ddpm_kiit.hub.render_model_card`] (e.g. `training_command`, `hyperparameters`, `sample_grid`, `quality`).
        `push_to_hub=True` pushes with our card, not Diffusers' bare one.
        """
        from ..hub import write_model_card
        from ..remote_code import write_remote_code

        push_to_hub = kwargs.pop("push_to_hub", False)
        super().save_pretrained(save_directory, *args, **kwargs)
        write_remote_code(self, save_directory)
        write_model_card(self, save_directory, **{"variant": kwargs.get("variant"), **(model_card_kwargs or {})})
        if push_to_hub:
            repo_id = kwargs.get("repo_id", os.path.basename(os.path.normpath(save_directory)))
            self.push_to_hub(repo_id, token=kwargs.get("token"), private=kwargs.get("private"))

    @needs_package
    def push_to_hub(
        self,
        repo_id: str,
        commit_message: Optional[str] = None,
        private: Optional[bool] = None,
        token: Optional[str] = None,
        create_pr: bool = False,
        safe_serialization: bool = True,
        variant: Optional[str] = None,
        model_card_kwargs: Optional[Dict] = None,
    ) -> str:
        """Uploads the pipeline (safetensors, configs) with our model card to the Hub; returns the commit URL.

        Diffusers' own `push_to_hub` writes a bare card after saving, which on a first push would replace ours; this
        saves the whole folder first and uploads it with [`ddpm_kiit.hub.push_folder`].
        """
        from ..hub import push_folder

        card_kwargs = {"repo_id_or_path": repo_id, **(model_card_kwargs or {})}
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(
                folder, safe_serialization=safe_serialization, variant=variant, model_card_kwargs=card_kwargs
            )
            return push_folder(folder, repo_id, token, private, commit_message, create_pr)

    def _check_inputs(self, batch_size, num_inference_steps, output_type, callback_on_step_end_tensor_inputs, eta):
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta) or not 0 <= eta <= 1:
            raise ValueError(f"`eta` must be a number in [0, 1] (0 is deterministic DDIM), got {eta!r}.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
        total = self.scheduler.config.num_train_timesteps
        if num_inference_steps is not None and (
            isinstance(num_inference_steps, bool)
            or not isinstance(num_inference_steps, int)
            or not 1 <= num_inference_steps <= total
        ):
            raise ValueError(
                f"`num_inference_steps` must be an integer between 1 and the scheduler's `num_train_timesteps`="
                f"{total} (or None for all of them), got {num_inference_steps!r}."
            )
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        unknown = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` may only name {self._callback_tensor_inputs}, got {unknown}."
            )

    def prepare_extra_step_kwargs(self, generator, eta: float) -> Dict:
        """What this scheduler's `step` takes beyond the tensors: stock schedulers differ (DDIM takes `eta`, the
        stochastic ones a `generator`, UniPC neither), as in Diffusers' own pipelines. A non-zero `eta` for a
        scheduler without it is refused rather than ignored."""
        parameters = set(inspect.signature(self.scheduler.step).parameters)
        if eta and "eta" not in parameters:
            raise ValueError(
                f"`eta`={eta} only applies to schedulers whose `step` takes it, such as DDIMScheduler; "
                f"{type(self.scheduler).__name__} does not. Swap in DDIMScheduler or leave `eta` at 0."
            )
        extra = {}
        if "eta" in parameters:
            extra["eta"] = eta
        if "generator" in parameters:
            extra["generator"] = generator
        return extra

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
        num_inference_steps: Optional[int] = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Optional[Callable[["KiitDDPMPipeline", int, int, Dict], Dict]] = None,
        callback_on_step_end_tensor_inputs: List[str] = ["latents"],
        eta: float = 0.0,
        image: Optional[torch.Tensor] = None,
        start_timestep: Optional[int] = None,
        class_labels: Optional[Union[int, List[int], torch.Tensor]] = None,
        guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
        timesteps: Optional[List[int]] = None,
    ) -> Union[ImagePipelineOutput, Tuple]:
        r"""
        Generates images from pure noise, or takes `image` back from level `start_timestep` of the forward process.

        Args:
            batch_size (`int`, defaults to 1): Number of images.
            generator (`torch.Generator`, *optional*): Makes generation deterministic.
            num_inference_steps (`int`, *optional*): Denoising steps; `None` means the pipeline's
                `default_num_inference_steps`, and where that is unset, every training timestep.
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"` (floats in [0, 1]) or `"pt"`.
            return_dict (`bool`, defaults to `True`): Return an [`ImagePipelineOutput`] instead of a tuple.
            callback_on_step_end (`Callable`, *optional*):
                Called after each step as `callback_on_step_end(pipe, step_index, timestep, callback_kwargs)` with the
                tensors named in `callback_on_step_end_tensor_inputs` (`"latents"` is x_{t-1}, `"pred_original_sample"`
                the scheduler's x0 estimate where it gives one, `"model_output"` the raw prediction). Returning a dict
                with `"latents"` replaces them. [`DenoisingRecorder`] uses it to record the denoising process.
            callback_on_step_end_tensor_inputs (`List[str]`, defaults to `["latents"]`): See above.
            eta (`float`, defaults to 0.0): DDIM's eta (Song et al. 2021), the share of fresh noise per step: 0 is
                deterministic DDIM, 1 matches DDPM's variance. Only for schedulers whose `step` takes it.
            image (`torch.Tensor`, *optional*): Clean images `(batch_size or 1, channels, height, width)` in [-1, 1]
                (`ddpm_kiit.images.pil_to_tensor` makes one from a picture) to degrade with `scheduler.add_noise` and
                denoise again, as SDEdit (Meng et al. 2022) does, instead of starting from pure noise.
            start_timestep (`int`, *optional*): With `image`: the forward-process level to start from. The chain of
                `num_inference_steps` is cut to its timesteps not above it (at least its last one); `None` starts at
                the chain's first timestep.
            class_labels (`int`, `List[int]` or `torch.Tensor`, *optional*): For a class-conditional unet
                (`num_class_embeds`): one class for every image or one per image. `None` samples without a class.
            guidance_scale (`float`, defaults to 1.5): Classifier-free guidance with `class_labels`
                ([`ClassifierFreeGuidance`]): 1 is the conditional model alone, larger follows the class more closely.
            timesteps (`List[int]`, *optional*): Custom timesteps to denoise on, noisiest first, instead of
                `num_inference_steps`; for schedulers whose `set_timesteps` takes them (e.g.
                `DPMSolverMultistepScheduler`). `None` uses the pipeline's `default_timesteps` where it has them.

        Returns:
            [`~pipelines.ImagePipelineOutput`] or `tuple`: the generated images.
        """
        self._check_inputs(batch_size, num_inference_steps, output_type, callback_on_step_end_tensor_inputs, eta)
        guidance = self.prepare_class_guidance(class_labels, guidance_scale, batch_size)
        return self._generate(
            batch_size,
            generator,
            num_inference_steps,
            output_type,
            return_dict,
            (callback_on_step_end, callback_on_step_end_tensor_inputs),
            eta,
            image,
            start_timestep,
            guidance,
            timesteps,
        )

    def _sample_shape(self) -> Tuple[int, int]:
        """Height and width of the images the unet samples (`sample_size`, an int or a pair)."""
        size = self.unet.config.sample_size
        return (size, size) if isinstance(size, int) else tuple(size)

    def prepare_class_guidance(self, class_labels, guidance_scale: float, batch_size: int) -> ClassifierFreeGuidance:
        """The unet's keyword arguments for `class_labels` and the null label, checked against the unet's classes."""
        guidance_scale = check_guidance_scale(guidance_scale)
        if class_labels is None:
            return ClassifierFreeGuidance({})
        num_classes = getattr(self.unet.config, "num_class_embeds", None)
        if num_classes is None:
            raise ValueError(
                "`class_labels` were given, but this pipeline's unet is unconditional; use a class-conditional "
                "pipeline (trained with `--conditioning class`)."
            )
        labels = torch.as_tensor(class_labels).reshape(-1)
        if labels.is_floating_point() or len(labels) not in (1, batch_size) or len(labels) == 0:
            raise ValueError(
                f"`class_labels` must be one integer or one per image ({batch_size}), got {class_labels!r}."
            )
        if ((labels < 0) | (labels >= num_classes)).any():
            raise ValueError(
                f"`class_labels` must lie in 0..{num_classes - 1} (this unet's {num_classes} classes), got "
                f"{labels.tolist()}."
            )
        device = self._execution_device
        labels = labels.to(device).expand(batch_size)
        null = torch.full_like(labels, num_classes)
        return ClassifierFreeGuidance({"class_labels": labels}, {"class_labels": null}, guidance_scale)

    def _generate(
        self,
        batch_size: int,
        generator,
        num_inference_steps: Optional[int],
        output_type: str,
        return_dict: bool,
        callback: Tuple,
        eta: float,
        image: Optional[torch.Tensor],
        start_timestep: Optional[int],
        guidance: ClassifierFreeGuidance,
        custom_timesteps: Optional[List[int]] = None,
    ):
        """Sampling proper, for every conditioning: start, denoise, convert."""
        shape = (batch_size, self.unet.config.in_channels, *self._sample_shape())
        if image is not None:
            image = self._check_image(image, shape)
        elif start_timestep is not None:
            raise ValueError("`start_timestep` is where `image` is degraded to; pass an `image` with it.")
        step_kwargs = self.prepare_extra_step_kwargs(generator, eta)
        device = self._execution_device

        timesteps = self.get_timesteps(num_inference_steps, device, start_timestep, custom_timesteps)
        latents = self.prepare_latents(
            shape, generator, device, self.unet.dtype, image=image, timestep=None if image is None else timesteps[0]
        )
        # Only entered when asked: `torch.inference_mode(False)` would switch gradient tracking back on.
        with torch.inference_mode() if self._inference_mode else contextlib.nullcontext():
            latents = self._denoise(latents, timesteps, step_kwargs, guidance, *callback)

        images = (latents / 2 + 0.5).clamp(0, 1)
        if output_type != "pt":
            images = images.float().cpu().permute(0, 2, 3, 1).numpy()
            if output_type == "pil":
                images = self.numpy_to_pil(images)

        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

    def get_timesteps(
        self,
        num_inference_steps: Optional[int],
        device,
        start_timestep: Optional[int] = None,
        custom_timesteps: Optional[List[int]] = None,
    ) -> torch.Tensor:
        """Sets the scheduler's chain of `num_inference_steps` (`None`: the pipeline's default), or of
        `custom_timesteps`, and returns the part to run: all of it, or from the largest timestep not above
        `start_timestep`. Schedulers that count their steps (`set_begin_index`) are told where the cut chain
        begins."""
        name, total = type(self.scheduler).__name__, self.scheduler.config.num_train_timesteps
        if custom_timesteps is not None:
            if num_inference_steps is not None:
                raise ValueError("Pass `num_inference_steps` or `timesteps`, not both.")
            custom_timesteps = check_timestep_list(custom_timesteps, total)
            if not takes_custom_timesteps(self.scheduler):
                raise ValueError(
                    f"{name}.set_timesteps takes no custom `timesteps`; pass `num_inference_steps` instead, or swap "
                    "in a scheduler that takes them, e.g. `pipe.scheduler = DPMSolverMultistepScheduler.from_config("
                    'pipe.scheduler.config, solver_order=1, final_sigmas_type="zero")` (DDIM\'s update).'
                )
        if num_inference_steps is None and custom_timesteps is None:
            num_inference_steps = self.default_inference_steps
        default = self.config.get("default_timesteps")
        if default is not None and num_inference_steps == len(default):
            if takes_custom_timesteps(self.scheduler):
                custom_timesteps = list(default)
            else:
                logger.warning(
                    f"This pipeline was distilled for the grid {list(default)}, which {name} cannot follow (its "
                    f"set_timesteps takes no custom timesteps); it samples on its own {num_inference_steps}-step "
                    "grid, which may draw worse images. Swap in `DPMSolverMultistepScheduler.from_config("
                    'pipe.scheduler.config, solver_order=1, final_sigmas_type="zero")` to follow it.'
                )
        if custom_timesteps is not None:
            self.scheduler.set_timesteps(timesteps=custom_timesteps, device=device)
            num_inference_steps = len(custom_timesteps)
        else:
            self.scheduler.set_timesteps(num_inference_steps, device=device)
        self._check_timesteps(num_inference_steps)
        timesteps = self.scheduler.timesteps
        if start_timestep is None:
            return timesteps
        total = self.scheduler.config.num_train_timesteps
        if isinstance(start_timestep, bool) or not isinstance(start_timestep, int) or not 0 <= start_timestep < total:
            raise ValueError(f"`start_timestep` must be an integer in [0, {total - 1}], got {start_timestep!r}.")
        not_above = (timesteps <= start_timestep).nonzero()
        begin = int(not_above[0]) if len(not_above) else len(timesteps) - 1
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(begin)
        return timesteps[begin:]

    def prepare_latents(self, shape, generator, device, dtype, image=None, timestep=None) -> torch.Tensor:
        """x at the start of the chain: `image` degraded to `timestep` by the scheduler's forward process; else the
        scheduler's own start (`initial_sample`, for processes that do not start from Gaussian noise, such as cold
        blur's flat image), else Gaussian noise scaled by `init_noise_sigma`."""
        if image is not None:
            noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
            timesteps = torch.full((shape[0],), int(timestep), device=device, dtype=torch.long)
            return self.scheduler.add_noise(image.to(device, dtype).expand(shape), noise, timesteps)
        if hasattr(self.scheduler, "initial_sample"):
            return self.scheduler.initial_sample(shape, generator=generator, device=device, dtype=dtype)
        return randn_tensor(shape, generator=generator, device=device, dtype=dtype) * self.scheduler.init_noise_sigma

    @staticmethod
    def _check_image(image, shape) -> torch.Tensor:
        if not torch.is_tensor(image) or image.ndim != 4 or image.shape[1:] != shape[1:]:
            got = tuple(image.shape) if torch.is_tensor(image) else type(image).__name__
            raise ValueError(
                f"`image` must be a tensor shaped (batch_size or 1, {', '.join(map(str, shape[1:]))}) in [-1, 1], the "
                f"unet's sample shape; got {got}. Make one from a picture with `ddpm_kiit.images.pil_to_tensor`."
            )
        if image.shape[0] not in (1, shape[0]):
            raise ValueError(f"`image` holds {image.shape[0]} images; pass 1 or `batch_size`={shape[0]}.")
        if not torch.isfinite(image).all() or image.min() < -1 or image.max() > 1:
            raise ValueError("`image` must hold finite values in [-1, 1] (x / 127.5 - 1 for 8-bit pixels).")
        return image

    def _check_timesteps(self, num_inference_steps: int):
        """Refuses repeated timesteps before any work: schedulers that find their place by looking the timestep up
        (`index_for_timestep`) step past their last sigma when one repeats, with an IndexError at the end of the run.
        Karras, exponential, beta and Lu sigmas can repeat timesteps on our zero-terminal-SNR schedules (the largest
        sigma is 4096, and those spacings crowd the steps near it). Second-order schedulers that repeat every timestep
        on purpose keep a `state_in_first_order` flag and are left alone."""
        scheduler = self.scheduler
        if not hasattr(scheduler, "index_for_timestep") or hasattr(scheduler, "state_in_first_order"):
            return
        timesteps = scheduler.timesteps
        repeats = len(timesteps) - len(torch.unique(timesteps))
        if not repeats:
            return
        name = type(scheduler).__name__
        options = [
            option
            for option in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas")
            if scheduler.config.get(option)
        ]
        if options:
            fix = (
                f"`{'`, `'.join(options)}` crowd the steps at the noisy end of this schedule (rescale_betas_zero_snr="
                f"{scheduler.config.get('rescale_betas_zero_snr')}); keep the default sigmas: `pipe.scheduler = "
                f"{name}.from_config(pipe.scheduler.config, {', '.join(f'{option}=False' for option in options)})`."
            )
        else:
            fix = "Use fewer num_inference_steps or another timestep_spacing."
        raise ValueError(
            f"{name} repeats {repeats} of its {len(timesteps)} timesteps for num_inference_steps="
            f"{num_inference_steps} (it starts {timesteps[:6].tolist()}) and would step past its end. {fix}"
        )

    def _denoise(
        self, latents, timesteps, step_kwargs, guidance, callback_on_step_end, callback_on_step_end_tensor_inputs
    ):
        autocast = torch.autocast(
            latents.device.type, dtype=self._autocast_dtype or torch.float32, enabled=self._autocast_dtype is not None
        )
        for i, t in enumerate(self.progress_bar(timesteps)):
            model_input = self.scheduler.scale_model_input(latents, t)
            with autocast:
                model_output = guidance.predict(self.unet, model_input, t)
            model_output = model_output.to(latents.dtype)
            output = self.scheduler.step(model_output, t, latents, **step_kwargs)
            latents = output.prev_sample
            if not torch.isfinite(latents).all():
                raise FloatingPointError(
                    f"Sampling produced non-finite values at step {i} (timestep {int(t)}) of "
                    f"{type(self.scheduler).__name__}. Common causes: fp16 weights overflowing (try float32 or "
                    f"bfloat16), or a scheduler whose config does not match the one the model was trained with."
                )

            if callback_on_step_end is not None:
                available = {
                    "latents": latents,
                    "pred_original_sample": getattr(output, "pred_original_sample", None),
                    "model_output": model_output,
                }
                callback_kwargs = {k: available[k] for k in callback_on_step_end_tensor_inputs}
                callback_outputs = callback_on_step_end(self, i, t, callback_kwargs) or {}
                latents = callback_outputs.pop("latents", latents)
        return latents
