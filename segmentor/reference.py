"""EmerDiff written plainly: one mask and one sign at a time, stock attention, forward hooks.

The yardstick for the batched implementation (tests compare the two, the benchmark times them). It
shares the preparation, features, k-means and assignment with ``EmerDiffSegmentor`` and replaces only
the modulated denoising: the reference run's ``to_q``/``to_k`` outputs are recorded by hooks, replayed
by hooks in each modulated run, and the modulation is a hook that adds to the attention layer's output.
"""

from __future__ import annotations

from contextlib import ExitStack

import torch

from segmentor import stages
from segmentor.assign import difference_maps
from segmentor.emerdiff import EmerDiffSegmentor


class ReferenceSegmentor(EmerDiffSegmentor):
    def _fill_difference_maps(self, maps: torch.Tensor, noisy: torch.Tensor, steps: list[tuple[int, int]],
                              masks: torch.Tensor, vanished: frozenset[int]) -> None:
        recorded: dict[tuple[str, str, int], torch.Tensor] = {}
        layer_outputs: list[torch.Tensor] = []
        modulated_layer = self.model.unet.get_submodule(self.config.modulation_layer)
        handle = modulated_layer.register_forward_hook(lambda _m, _i, output: layer_outputs.append(output))
        with self._log.stage("reference_run"):
            reference = self._run(noisy, steps, recorded, replay=False)
        handle.remove()
        one_sided = self.config.difference == "one_sided"
        if one_sided:
            with self._log.stage("decode"):
                reference_image = stages.decode(self.model, reference)
                self._log.count("vae_decodes")
        strength = self.modulation_strength(float(layer_outputs[0].float().square().mean().sqrt()))
        for index in range(masks.shape[0]):
            if index in vanished:
                continue
            images = []
            for sign in (1.0,) if one_sided else (1.0, -1.0):
                offset = sign * strength * masks[index].flatten()[None, :, None]
                with self._log.stage("modulated_runs"):
                    latent = self._run(noisy, steps, recorded, replay=self.config.attention_injection, offset=offset)
                with self._log.stage("decode"):
                    images.append(stages.decode(self.model, latent))
                    self._log.count("vae_decodes")
            maps[index] = difference_maps(images[0], reference_image if one_sided else images[1])[0]

    def _run(self, noisy: torch.Tensor, steps: list[tuple[int, int]], recorded: dict, *, replay: bool,
             offset: torch.Tensor | None = None) -> torch.Tensor:
        """One denoising run at batch 1. Without replay, the projections it computes are recorded."""
        current = {"step": 0}

        def projection_hook(layer: str, kind: str):
            def hook(_module, _inputs, output):
                key = (layer, kind, current["step"])
                if replay:
                    return recorded[key]
                if offset is None:
                    recorded[key] = output
                return output
            return hook

        def modulation_hook(_module, _inputs, output):
            return output + offset.to(output.dtype) if current["step"] == 0 else output

        x = noisy
        with ExitStack() as hooks:
            for layer in self._layers:
                attention = self.model.unet.get_submodule(layer)
                for kind in ("to_q", "to_k"):
                    handle = getattr(attention, kind).register_forward_hook(projection_hook(layer, kind))
                    hooks.callback(handle.remove)
            if offset is not None:
                handle = self.model.unet.get_submodule(self.config.modulation_layer).register_forward_hook(
                    modulation_hook)
                hooks.callback(handle.remove)
            for step, ((t, t_prev), noise) in enumerate(zip(steps, self.step_noise(noisy, len(steps)), strict=True)):
                current["step"] = step
                output = self.model.unet(x, torch.tensor(t, device=x.device), encoder_hidden_states=self._text).sample
                x = self.step(output, t, t_prev, x, noise)
                self._log.count("unet_sample_passes")
        return x
