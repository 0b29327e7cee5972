# Copyright 2026 The ddpm-kiit authors. Licensed under the Apache License, Version 2.0.
"""Text-to-image generation in pixel space: a SimpleUNet with cross-attention, a `transformers` text encoder and its
tokenizer, and any Diffusers scheduler (the talk's "Text2Img using CLIP" step)."""

from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput

from .pipeline_kiit_ddpm import ClassifierFreeGuidance, KiitDDPMPipeline, check_guidance_scale, logger

# The scale with the best prompt fidelity in the measured sweep of the shipped emoji-text model (docs/conditioning.md,
# benchmarks/text_guidance.py).
DEFAULT_TEXT_GUIDANCE_SCALE = 2.0


@torch.no_grad()
def encode_prompts(text_encoder, tokenizer, prompts: List[str], device) -> torch.Tensor:
    """`text_encoder`'s last hidden states for `prompts`, each padded (or cut, with a warning) to the tokenizer's
    `model_max_length`, as Stable Diffusion does. Training embeds its captions with it too, so that the model sees
    prompts exactly as the pipeline will give them."""
    max_length = tokenizer.model_max_length
    tokens = tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True)
    for prompt, ids in zip(prompts, tokenizer(prompts).input_ids):  # unpadded: each prompt's own length
        if len(ids) > max_length:
            logger.warning(f"The prompt {prompt!r} is longer than the tokenizer's {max_length} tokens; cut.")
    return text_encoder(torch.tensor(tokens.input_ids, device=device)).last_hidden_state


class KiitTextToImagePipeline(KiitDDPMPipeline):
    r"""
    Pipeline for text-to-image generation with a text-conditional SimpleUNet (`cross_attention_dim` set), with
    [`~diffusers.StableDiffusionPipeline`]'s argument names: `prompt`, `negative_prompt`, `guidance_scale`,
    `num_images_per_prompt`, `prompt_embeds`, `negative_prompt_embeds`. Everything after the prompt encoding (the
    sampling loop, scheduler swaps, callbacks, fast inference) is [`KiitDDPMPipeline`]'s.

    Parameters:
        unet ([`SimpleUNet2DModel`]): A text-conditional unet.
        scheduler ([`SchedulerMixin`]): [`KiitDDPMScheduler`] or any stock Diffusers scheduler.
        text_encoder ([`~transformers.CLIPTextModel`]): Encodes prompts; its `last_hidden_state` is what the unet
            attends to.
        tokenizer ([`~transformers.CLIPTokenizer`] or any `transformers` tokenizer): Tokenizes prompts, padded to
            its `model_max_length`.
    """

    model_cpu_offload_seq = "text_encoder->unet"

    def __init__(self, unet, scheduler, text_encoder, tokenizer):
        super().__init__(unet=unet, scheduler=scheduler)
        self.register_modules(text_encoder=text_encoder, tokenizer=tokenizer)

    def encode_prompt(self, prompts: List[str], device) -> torch.Tensor:
        """The text encoder's last hidden states for `prompts` (see `encode_prompts`)."""
        return encode_prompts(self.text_encoder, self.tokenizer, prompts, device)

    def _prompt_list(self, prompt, name: str, count: Optional[int] = None) -> List[str]:
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts) or not prompts:
            raise ValueError(f"`{name}` must be a string or a non-empty list of strings, got {prompt!r}.")
        if count is not None and len(prompts) == 1:
            prompts = list(prompts) * count
        if count is not None and len(prompts) != count:
            raise ValueError(f"`{name}` holds {len(prompts)} prompts for {count} prompts; pass one or {count}.")
        return list(prompts)

    def prepare_text_guidance(
        self,
        prompt,
        negative_prompt,
        prompt_embeds: Optional[torch.Tensor],
        negative_prompt_embeds: Optional[torch.Tensor],
        num_images_per_prompt: int,
        guidance_scale: float,
    ) -> Tuple[ClassifierFreeGuidance, int]:
        """The unet's keyword arguments for the prompts and the negative prompts (default: the empty prompt, what
        training's conditioning dropout taught as "no prompt"); returns them and the number of images."""
        guidance_scale = check_guidance_scale(guidance_scale)
        if isinstance(num_images_per_prompt, bool) or not isinstance(num_images_per_prompt, int):
            raise ValueError(f"`num_images_per_prompt` must be a positive integer, got {num_images_per_prompt!r}.")
        if num_images_per_prompt < 1:
            raise ValueError(f"`num_images_per_prompt` must be a positive integer, got {num_images_per_prompt!r}.")
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError("Pass exactly one of `prompt` and `prompt_embeds`.")
        device = self._execution_device
        if prompt_embeds is None:
            prompt_embeds = self.encode_prompt(self._prompt_list(prompt, "prompt"), device)
        width = self.unet.config.cross_attention_dim
        if prompt_embeds.ndim != 3 or prompt_embeds.shape[-1] != width:
            raise ValueError(
                f"`prompt_embeds` must be shaped (prompts, tokens, {width}), got {tuple(prompt_embeds.shape)}: the "
                f"unet's `cross_attention_dim` is {width}: use the text encoder it was trained with."
            )
        count = prompt_embeds.shape[0]
        if negative_prompt_embeds is None:
            negative = self._prompt_list("" if negative_prompt is None else negative_prompt, "negative_prompt", count)
            negative_prompt_embeds = self.encode_prompt(negative, device)
        elif negative_prompt is not None:
            raise ValueError("Pass at most one of `negative_prompt` and `negative_prompt_embeds`.")
        if negative_prompt_embeds.shape != prompt_embeds.shape:
            raise ValueError(
                f"`negative_prompt_embeds` {tuple(negative_prompt_embeds.shape)} must match `prompt_embeds` "
                f"{tuple(prompt_embeds.shape)}."
            )
        dtype = self.unet.dtype
        positive, negative = (
            embeds.to(device, dtype).repeat_interleave(num_images_per_prompt, dim=0)
            for embeds in (prompt_embeds, negative_prompt_embeds)
        )
        guidance = ClassifierFreeGuidance(
            {"encoder_hidden_states": positive}, {"encoder_hidden_states": negative}, guidance_scale
        )
        return guidance, count * num_images_per_prompt

    @torch.no_grad()
    def __call__(
        self,
        prompt: Optional[Union[str, List[str]]] = None,
        negative_prompt: Optional[Union[str, List[str]]] = None,
        num_images_per_prompt: int = 1,
        guidance_scale: float = DEFAULT_TEXT_GUIDANCE_SCALE,
        num_inference_steps: Optional[int] = None,
        generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
        prompt_embeds: Optional[torch.Tensor] = None,
        negative_prompt_embeds: Optional[torch.Tensor] = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Optional[Callable[["KiitTextToImagePipeline", int, int, Dict], Dict]] = None,
        callback_on_step_end_tensor_inputs: List[str] = ["latents"],
        eta: float = 0.0,
        image: Optional[torch.Tensor] = None,
        start_timestep: Optional[int] = None,
    ) -> Union[ImagePipelineOutput, Tuple]:
        r"""
        Generates images that show `prompt`.

        Args:
            prompt (`str` or `List[str]`, *optional*): What to draw; or pass `prompt_embeds`.
            negative_prompt (`str` or `List[str]`, *optional*): What guidance steers away from (default: the empty
                prompt, i.e. plain classifier-free guidance).
            num_images_per_prompt (`int`, defaults to 1): Images per prompt.
            guidance_scale (`float`, defaults to 2.0): Classifier-free guidance; 1 is the conditional model alone.
            num_inference_steps (`int`, *optional*): Denoising steps; `None` means every training timestep.
            generator (`torch.Generator`, *optional*): Makes generation deterministic.
            prompt_embeds, negative_prompt_embeds (`torch.Tensor`, *optional*): Precomputed text encoder outputs.
            output_type, return_dict, callback_on_step_end, callback_on_step_end_tensor_inputs, eta, image,
                start_timestep: As in [`KiitDDPMPipeline.__call__`] (`image` and `start_timestep`: SDEdit towards the
                prompt from a degraded picture).

        Returns:
            [`~pipelines.ImagePipelineOutput`] or `tuple`: the generated images, grouped by prompt.
        """
        guidance, batch_size = self.prepare_text_guidance(
            prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, num_images_per_prompt, guidance_scale
        )
        self._check_inputs(batch_size, num_inference_steps, output_type, callback_on_step_end_tensor_inputs, eta)
        callback = (callback_on_step_end, callback_on_step_end_tensor_inputs)
        return self._generate(
            batch_size, generator, num_inference_steps, output_type, return_dict, callback, eta, image,
            start_timestep, guidance,
        )  # fmt: skip
