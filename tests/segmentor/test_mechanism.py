"""The mechanism, observed from outside in both implementations: what the U-Net is actually fed and does.

Forward hooks on the real tiny model record, call by call, the modulation layer's added offset, every
attention layer's Q, K, V and attention result, and the decoder's images; the tests compare them with
what the paper prescribes, computed independently (diffusers' scheduler, OpenCV's blur, plain SDPA).
The batched and the reference implementation are run through the same checks, so a mistake made in
both still fails. README "How the mechanism tests were checked" lists the faults each one catches.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler

from segmentor import EmerDiffConfig, EmerDiffSegmentor, stages
from segmentor.assign import difference_maps
from segmentor.attention import InjectionState
from segmentor.reference import ReferenceSegmentor
from tests.segmentor.conftest import scene_image

IMPLEMENTATIONS = [EmerDiffSegmentor, ReferenceSegmentor]
PAPER_LAYER = "up_blocks.1.attentions.0.transformer_blocks.0.attn2"
PAPER_LAMBDA = 10.0
PAPER_T_M = 281
PAPER_T_F = 1
GRID = list(range(281, 0, -20))  # the 50-step DDIM grid from t_m down: 15 U-Net calls per run


def _given_masks() -> np.ndarray:
    """Two masks on the 8x8 grid; the first is L-shaped, so a transposed or reordered offset differs."""
    first = np.zeros((8, 8), dtype=bool)
    first[:3, :] = True
    first[:, :2] = True
    return np.stack([first, ~first])


class UNetRecorder:
    """Forward hooks on the real model that record what every U-Net call did, in call order."""

    def __init__(self, segmentor: EmerDiffSegmentor) -> None:
        self.segmentor = segmentor
        self.unet = segmentor.model.unet
        self.calls: list[dict] = []
        self._handles = []

    def __enter__(self) -> UNetRecorder:
        hook = self._handles.append
        hook(self.unet.register_forward_pre_hook(self._on_call))
        block = self.unet.get_submodule(PAPER_LAYER.rsplit(".", 1)[0])
        # What attn2 finally hands the block (after every hook of either implementation) is the block's
        # residual stream before norm3 minus the one before norm2; its to_out output is before any offset.
        hook(block.norm2.register_forward_pre_hook(lambda _m, args: self._put("stream_in", args[0])))
        hook(block.norm3.register_forward_pre_hook(lambda _m, args: self._put("stream_out", args[0])))
        hook(block.attn2.to_out[1].register_forward_hook(lambda _m, _a, out: self._put("projected", out)))
        for layer in self.segmentor._layers:
            attention = self.unet.get_submodule(layer)
            for kind in ("to_q", "to_k", "to_v"):
                hook(getattr(attention, kind).register_forward_hook(self._layer_hook(layer, kind)))
            hook(attention.to_out[0].register_forward_pre_hook(
                lambda _m, args, layer=layer: self._put((layer, "attended"), args[0])))
        return self

    def __exit__(self, *_exc) -> None:
        for handle in self._handles:
            handle.remove()

    def _on_call(self, _module, args) -> None:
        self.calls.append({"t": int(args[1]), "batch": args[0].shape[0]})

    def _put(self, key, value: torch.Tensor) -> None:
        self.calls[-1].setdefault(key, value.detach().clone())

    def _layer_hook(self, layer: str, kind: str):
        return lambda _m, _a, out: self._put((layer, kind), out)

    def offsets(self) -> list[torch.Tensor]:
        """Per call, what the modulation layer added to its output: (batch, tokens, channels)."""
        return [c["stream_out"] - c["stream_in"] - c["projected"] for c in self.calls]


def _segment(implementation, tiny_model, **settings):
    segmentor = implementation(tiny_model, EmerDiffConfig(num_segments=2, batch_size=4, **settings))
    with UNetRecorder(segmentor) as recorder:
        result = segmentor.segment(scene_image(21), low_res_masks=_given_masks())
    return segmentor, recorder, result


@pytest.fixture(scope="module", params=IMPLEMENTATIONS, ids=["batched", "reference"])
def recorded(request, tiny_model):
    return _segment(request.param, tiny_model)


def test_the_offset_is_s_lambda_m_at_t_m_and_nothing_else_anywhere(recorded):
    """The strongest single check: modulated minus unmodulated output of the paper's layer, every call."""
    _, recorder, _ = recorded
    offsets = recorder.offsets()
    masks = torch.as_tensor(_given_masks().reshape(2, -1), dtype=torch.float32)  # row-major (h, w) tokens
    runs = [(0, 1.0), (0, -1.0), (1, 1.0), (1, -1.0)]
    expected = torch.stack([sign * PAPER_LAMBDA * masks[index] for index, sign in runs])
    # Call 0 is the feature pass, calls 1..15 the reference run: no offset there.
    modulated_first = [i for i, call in enumerate(recorder.calls) if i > len(GRID) and call["t"] == PAPER_T_M]
    added = torch.cat([offsets[i] for i in modulated_first])
    assert added.shape[0] == len(runs), "one modulated first step per run"
    for channel in (0, added.shape[-1] - 1):
        torch.testing.assert_close(added[..., channel], expected, rtol=0, atol=1e-4)
    for i, offset in enumerate(offsets):
        if i not in modulated_first:
            torch.testing.assert_close(offset, torch.zeros_like(offset), rtol=0, atol=1e-4,
                                       msg=f"call {i} (t={recorder.calls[i]['t']}) added an offset")


def test_modulated_runs_follow_the_grid_from_t_m(recorded):
    _, recorder, _ = recorded
    timesteps = [call["t"] for call in recorder.calls]
    assert timesteps[0] == PAPER_T_F
    assert timesteps[1:1 + len(GRID)] == GRID
    modulated = timesteps[1 + len(GRID):]
    assert len(modulated) % len(GRID) == 0 and modulated == GRID * (len(modulated) // len(GRID))
    assert sum(call["batch"] for call in recorder.calls[1 + len(GRID):]) == 4 * len(GRID)


def test_every_attention_layer_uses_the_reference_runs_queries_and_keys_of_the_same_step(recorded):
    """softmax(Q_ref K_ref^T) V_run in every layer, at every step, in every modulated run."""
    segmentor, recorder, _ = recorded
    reference = {call["t"]: call for call in recorder.calls[1:1 + len(GRID)]}
    checked = 0
    for call in recorder.calls[1 + len(GRID):]:
        for layer in segmentor._layers:
            heads = segmentor.model.unet.get_submodule(layer).heads
            query, key = (_split(reference[call["t"]][(layer, kind)], heads) for kind in ("to_q", "to_k"))
            value = _split(call[(layer, "to_v")], heads)
            expected = F.scaled_dot_product_attention(query.expand(value.shape[0], -1, -1, -1),
                                                      key.expand(value.shape[0], -1, -1, -1), value)
            expected = expected.transpose(1, 2).flatten(2)
            torch.testing.assert_close(call[(layer, "attended")], expected,
                                       msg=f"{layer} at t={call['t']} did not attend with the reference Q/K")
            checked += 1
    assert checked == 4 * len(GRID) * len(segmentor._layers) // recorder.calls[-1]["batch"]


def _split(x: torch.Tensor, heads: int) -> torch.Tensor:
    batch, tokens, inner = x.shape
    return x.view(batch, tokens, heads, inner // heads).transpose(1, 2)


def test_features_are_the_paper_layers_queries_at_t_f(recorded):
    _, recorder, result = recorded
    first = recorder.calls[0]
    assert first["t"] == PAPER_T_F and first["batch"] == 1
    queries = first[(PAPER_LAYER, "to_q")][0]
    np.testing.assert_array_equal(result.features.reshape(-1, result.features.shape[-1]), queries.numpy())


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS, ids=["batched", "reference"])
@pytest.mark.parametrize("sigma", [0.0, 3.0])
def test_response_maps_are_the_blurred_l2_norm_of_each_decoded_pair(tiny_model, implementation, sigma):
    """|clamp(I+) - clamp(I-)|_2 over RGB, blurred by OpenCV with sigma x working size / 512."""
    segmentor = implementation(tiny_model, EmerDiffConfig(num_segments=2, batch_size=4, blur_sigma=sigma,
                                                          working_size=128))
    noisy = _noisy_latent(segmentor, scene_image(22, 128, 128))
    masks = torch.as_tensor(np.repeat(np.repeat(_given_masks(), 2, 1), 2, 2), dtype=torch.float32)
    images = []
    handle = tiny_model.vae.decoder.register_forward_hook(lambda _m, _a, out: images.append(out.detach()))
    try:
        with torch.inference_mode():
            maps = segmentor.response_maps(noisy, masks, frozenset())
    finally:
        handle.remove()
    decoded = torch.cat(images).clamp(-1, 1)
    raw = torch.sqrt(((decoded[0::2] - decoded[1::2]) ** 2).sum(dim=1)).numpy()
    scaled = sigma * 128 / 512
    expected = np.stack([_opencv_blur(m, scaled) for m in raw]) if sigma else raw
    torch.testing.assert_close(maps, torch.from_numpy(expected), rtol=1e-4, atol=1e-6)


def _opencv_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    size = 2 * int(np.ceil(3 * sigma)) + 1
    return cv2.GaussianBlur(image, (size, size), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)


def _noisy_latent(segmentor: EmerDiffSegmentor, image: np.ndarray) -> torch.Tensor:
    model = segmentor.model
    with torch.inference_mode():
        latents = stages.encode(model, stages.to_model_input(image, segmentor.working_shape(*image.shape[:2]), model))
    noise = stages.seeded_noise(latents, torch.Generator().manual_seed(3))
    return stages.add_noise(model, latents, noise, PAPER_T_M)


def test_batched_and_reference_response_maps_agree_to_float_rounding(tiny_model):
    config = EmerDiffConfig(num_segments=2, batch_size=4)
    batched, reference = EmerDiffSegmentor(tiny_model, config), ReferenceSegmentor(tiny_model, config)
    noisy = _noisy_latent(batched, scene_image(23))
    masks = torch.as_tensor(_given_masks(), dtype=torch.float32)
    with torch.inference_mode():
        ours = batched.response_maps(noisy, masks, frozenset())
        theirs = reference.response_maps(noisy, masks, frozenset())
    assert ours.abs().max() > 1e-3  # the modulation has an effect to compare
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_sampler_update_is_diffusers_ddim_step(tiny_model, prediction_type, eta):
    """Every step of the grid, against DDIMScheduler.step (eta 0: DDIM; eta 1 with shared noise: DDPM)."""
    scheduler = DDIMScheduler.from_config(tiny_model.scheduler.config, prediction_type=prediction_type)
    scheduler.set_timesteps(50)
    model = _with_scheduler(tiny_model, scheduler)
    generator = torch.Generator().manual_seed(0)
    for t, t_prev in stages.denoising_steps(model, PAPER_T_M, 50, 1):
        x, output, noise = (torch.randn((2, 4, 16, 16), generator=generator) for _ in range(3))
        ours = stages.ddim_step(model, output, t, t_prev, x, eta=eta, noise=noise)
        theirs = scheduler.step(output, t, x, eta=eta, variance_noise=noise).prev_sample
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def _with_scheduler(model, scheduler):
    from dataclasses import replace

    return replace(model, scheduler=scheduler)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS, ids=["batched", "reference"])
@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_reference_run_is_a_plain_diffusers_sampling_loop(tiny_model, implementation, sampler):
    """The unmodulated run from t_m equals stock attention + DDIMScheduler.step over the same grid."""
    segmentor = implementation(tiny_model, EmerDiffConfig(num_segments=2, sampler=sampler))
    noisy = _noisy_latent(segmentor, scene_image(24))
    steps = segmentor.denoising_steps()
    with torch.inference_mode():
        if implementation is ReferenceSegmentor:
            ours = segmentor._run(noisy, steps, {}, replay=False)
        else:
            ours = segmentor.denoise(noisy, steps, InjectionState(), record=False)
        scheduler = DDIMScheduler.from_config(tiny_model.scheduler.config)
        scheduler.set_timesteps(50)
        noises = stages.sampler_noise(noisy, len(steps), segmentor.config.seed + 1)
        x = noisy
        for (t, _), noise in zip(steps, noises, strict=True):
            output = tiny_model.unet(x, torch.tensor(t), encoder_hidden_states=segmentor.text_embedding).sample
            x = scheduler.step(output, t, x, eta=1.0 if sampler == "ddpm" else 0.0, variance_noise=noise).prev_sample
    torch.testing.assert_close(ours, x, rtol=1e-5, atol=1e-5)


def test_inversion_is_diffusers_ddim_inverse_scheduler(tiny_model):
    from diffusers import DDIMInverseScheduler

    segmentor = EmerDiffSegmentor(tiny_model, EmerDiffConfig(num_segments=2, noising="inversion"))
    latents = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(1))
    inverse = DDIMInverseScheduler.from_config(tiny_model.scheduler.config)
    inverse.set_timesteps(50)
    with torch.inference_mode():
        ours, passes = stages.ddim_invert(tiny_model, latents, segmentor.text_embedding, PAPER_T_M, 50)
        x = latents
        for t in [t for t in inverse.timesteps if t <= PAPER_T_M]:
            output = tiny_model.unet(x, t, encoder_hidden_states=segmentor.text_embedding).sample
            x = inverse.step(output, t, x).prev_sample
    assert passes == len(GRID)
    torch.testing.assert_close(ours, x, rtol=1e-5, atol=1e-5)


def test_difference_maps_clamp_images_and_take_the_l2_norm():
    plus = torch.tensor([1.5, 0.3, -0.4]).view(1, 3, 1, 1)
    minus = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    # Red is past white in both (no difference of images); green and blue give the L2 norm 0.5.
    torch.testing.assert_close(difference_maps(plus, minus), torch.tensor([[[0.5]]]))
