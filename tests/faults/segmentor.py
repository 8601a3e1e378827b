"""The segmentor's mechanism faults (EmerDiff's modulation, injection, maps, sampler, defaults, safeguards).

Each was put into the code by hand and the named tests failed; ``python tests/break_by_hand.py --module segmentor``
repeats it. "both" = the same mistake in the batched and the reference implementation at once, which the
batched-vs-reference comparison alone cannot see. With no fault, every named test passes (the CI's pytest run).
"""

from tests.faults import fault

M = "tests/segmentor/test_mechanism.py"
S = "tests/segmentor/test_safeguards.py"
D = "tests/segmentor/test_mechanics.py::test_defaults_are_the_papers_settings"
OFFSET = f"{M}::test_the_offset_is_s_lambda_m_at_t_m_and_nothing_else_anywhere"
INJ = f"{M}::test_every_attention_layer_uses_the_reference_runs_queries_and_keys_of_the_same_step"
MAPS = f"{M}::test_response_maps_are_the_blurred_l2_norm_of_each_decoded_pair"
AGREE = f"{M}::test_batched_and_reference_response_maps_agree_to_float_rounding"
FEAT = f"{M}::test_features_are_the_paper_layers_queries_at_t_f"
SAMP = f"{M}::test_sampler_update_is_diffusers_ddim_step"
LOOP = f"{M}::test_reference_run_is_a_plain_diffusers_sampling_loop"
E, R, A, ST = "segmentor/emerdiff.py", "segmentor/reference.py", "segmentor/attention.py", "segmentor/stages.py"
C = "segmentor/config.py"

FAULTS = [
    fault(
        "offset at every step (batched)",
        [(E, "state.offset = offsets if step == 0 else None", "state.offset = offsets")],
        [OFFSET],
    ),
    fault(
        "offset at every step (reference)",
        [(R, 'if current["step"] == 0 else output', "if True else output")],
        [OFFSET],
    ),
    fault(
        "offset at every step (both)",
        [
            (E, "state.offset = offsets if step == 0 else None", "state.offset = offsets"),
            (R, 'if current["step"] == 0 else output', "if True else output"),
        ],
        [OFFSET],
    ),
    fault(
        "keys not injected (both)",
        [
            (A, "key = key.expand(batch, -1, -1, -1)", "key = _split_heads(attn.to_k(context), attn.heads)"),
            (R, "if replay:", 'if replay and kind == "to_q":'),
        ],
        [INJ],
    ),
    fault(
        "injection at the wrong step (both)",
        [
            (
                A,
                "query, key = state.stored[(self.name, state.step)]",
                "query, key = state.stored[(self.name, max(state.step - 1, 0))]",
            ),
            (R, "return recorded[key]", 'return recorded[(layer, kind, max(current["step"] - 1, 0))]'),
        ],
        [INJ],
    ),
    fault(
        "no injection at t_m (both)",
        [
            (A, "if state.inject:", "if state.inject and state.step > 0:"),
            (R, "if replay:", 'if replay and current["step"] > 0:'),
        ],
        [INJ],
    ),
    fault(
        "DDIM update returns x0",
        [(ST, "return (alpha_prev.sqrt() * x0 + (1 - alpha_prev).sqrt() * eps).to(x.dtype)", "return x0.to(x.dtype)")],
        [SAMP, LOOP],
    ),
    fault(
        "DDIM update uses alpha_t for the noise term",
        [
            (
                ST,
                "return (alpha_prev.sqrt() * x0 + (1 - alpha_prev).sqrt() * eps).to(x.dtype)",
                "return (alpha_prev.sqrt() * x0 + (1 - alpha).sqrt() * eps).to(x.dtype)",
            )
        ],
        [SAMP, LOOP],
    ),
    fault(
        "denoising loop passes t_prev to the U-Net (both)",
        [
            (
                E,
                "output = self.model.unet(x, torch.tensor(t, device=x.device), encoder_hidden_states=text).sample",
                "output = self.model.unet(x, torch.tensor(max(t_prev, 0), device=x.device), encoder_hidden_states=text).sample",  # noqa: E501 (the exact line the fault edits)
            ),
            (
                R,
                "output = self.model.unet(x, torch.tensor(t, device=x.device), encoder_hidden_states=self._text).sample",  # noqa: E501 (the exact line the fault edits)
                "output = self.model.unet(x, torch.tensor(max(t_prev, 0), device=x.device), encoder_hidden_states=self._text).sample",  # noqa: E501 (the exact line the fault edits)
            ),
        ],
        [LOOP, f"{M}::test_modulated_runs_follow_the_grid_from_t_m"],
    ),
    fault(
        "no blur",
        [(E, "return gaussian_blur(maps, self.config.blur_sigma * max(maps.shape[-2:]) / 512)", "return maps")],
        [MAPS],
    ),
    fault(
        "L1 instead of L2",
        [("segmentor/assign.py", "minus.float().clamp(-1, 1), dim=1)", "minus.float().clamp(-1, 1), ord=1, dim=1)")],
        [MAPS, f"{M}::test_difference_maps_clamp_images_and_take_the_l2_norm"],
    ),
    fault(
        "blur sigma not scaled with the working size",
        [(E, "self.config.blur_sigma * max(maps.shape[-2:]) / 512", "self.config.blur_sigma")],
        [MAPS],
    ),
    fault(
        "no clamp of decoded images",
        [
            (
                "segmentor/assign.py",
                "torch.linalg.vector_norm(plus.float().clamp(-1, 1) - minus.float().clamp(-1, 1), dim=1)",
                "torch.linalg.vector_norm(plus.float() - minus.float(), dim=1)",
            )
        ],
        [MAPS, f"{M}::test_difference_maps_clamp_images_and_take_the_l2_norm"],
    ),
    fault(
        "features from another layer (attn1)",
        [
            (
                ST,
                "with captured_queries(model, layer) as captured:",
                'with captured_queries(model, layer.replace("attn2", "attn1")) as captured:',
            )
        ],
        [FEAT],
    ),
    fault(
        "features from another layer (next block)",
        [
            (
                ST,
                "with captured_queries(model, layer) as captured:",
                'with captured_queries(model, layer.replace("attentions.0", "attentions.1")) as captured:',
            )
        ],
        [FEAT],
    ),
    fault(
        "features at another timestep (t_m)",
        [(E, "config.feature_timestep, feature_noise)", "config.modulation_timestep, feature_noise)")],
        [FEAT, f"{M}::test_modulated_runs_follow_the_grid_from_t_m"],
    ),
    fault(
        "offset on transposed tokens (both)",
        [
            (E, "masks[indices].flatten(1)", "masks[indices].transpose(-1, -2).flatten(1)"),
            (R, "masks[index].flatten()[None, :, None]", "masks[index].T.flatten()[None, :, None]"),
        ],
        [OFFSET],
    ),
    fault(
        "offset with the wrong sign (both)",
        [
            (E, "offsets = (signs[:, None]", "offsets = (-signs[:, None]"),
            (R, "offset = sign * strength", "offset = -sign * strength"),
        ],
        [OFFSET],
    ),
    fault(
        "offset on the wrong layer (both)",
        [
            (
                E,
                "InjectionState(modulation_layer=self.config.modulation_layer",
                'InjectionState(modulation_layer=self.config.modulation_layer.replace("attentions.0", "attentions.1")',
            ),
            (
                R,
                "handle = self.model.unet.get_submodule(self.config.modulation_layer).register_forward_hook(",
                'handle = self.model.unet.get_submodule(self.config.modulation_layer.replace("attentions.0", "attentions.1")).register_forward_hook(',  # noqa: E501 (the exact line the fault edits)
            ),
        ],
        [OFFSET],
    ),
    fault(
        "offset on the wrong tokens: mask order (both)",
        [
            (
                E,
                "indices = torch.tensor([index for index, _ in chunk], device=masks.device)",
                "indices = torch.tensor([masks.shape[0] - 1 - index for index, _ in chunk], device=masks.device)",
            ),
            (
                R,
                "offset = sign * strength * masks[index]",
                "offset = sign * strength * masks[masks.shape[0] - 1 - index]",
            ),
        ],
        [OFFSET],
    ),
    fault("default lambda 5", [(C, "modulation_strength: float = 10.0", "modulation_strength: float = 5.0")], [D]),
    fault(
        "default relative lambda", [(C, "modulation_relative: bool = False", "modulation_relative: bool = True")], [D]
    ),
    fault("default t_f 21", [(C, "feature_timestep: int = 1", "feature_timestep: int = 21")], [D]),
    fault("default t_m 261", [(C, "modulation_timestep: int = 281", "modulation_timestep: int = 261")], [D]),
    fault("default 25 steps", [(C, "num_inference_steps: int = 50", "num_inference_steps: int = 25")], [D]),
    fault("default stride 2", [(C, "step_stride: int = 1", "step_stride: int = 2")], [D]),
    fault(
        "default modulation layer attentions.1",
        [
            (
                C,
                'MODULATION_LAYER = "up_blocks.1.attentions.0.transformer_blocks.0.attn2"',
                'MODULATION_LAYER = "up_blocks.1.attentions.1.transformer_blocks.0.attn2"',
            )
        ],
        [D],
    ),
    fault(
        "default feature layer attn1",
        [
            (
                C,
                'FEATURE_LAYER = "up_blocks.1.attentions.0.transformer_blocks.0.attn2"',
                'FEATURE_LAYER = "up_blocks.1.attentions.0.transformer_blocks.0.attn1"',
            )
        ],
        [D],
    ),
    fault("default injection off", [(C, "attention_injection: bool = True", "attention_injection: bool = False")], [D]),
    fault("default sampler ddpm", [(C, 'sampler: str = "ddim"', 'sampler: str = "ddpm"')], [D]),
    fault("default noising inversion", [(C, 'noising: str = "forward"', 'noising: str = "inversion"')], [D]),
    fault(
        "scores from the pre-reassignment margin",
        [
            (
                E,
                "return assign_labels(maps, labels.shape, exclude=exclude)",
                "return assign_labels(maps, labels.shape, exclude=exclude)[0], margin",
            )
        ],
        [f"{S}::test_scores_after_min_area_come_from_the_final_assignment"],
    ),
    fault(
        "biased baseline (EmerDiff's winners only)",
        [
            (
                "segmentor/result.py",
                "coarse = np.stack([self.coarse_labels == i for i in range(count)]).astype(np.float32)",
                "coarse = np.stack([s.low_res_mask for s in self.segments]).astype(np.float32)",
            )
        ],
        [f"{S}::test_baseline_upsamples_every_coarse_mask_not_only_emerdiffs_winners"],
    ),
    fault(
        "failed attempts counted",
        [("segmentor/runlog.py", "            self.timings, self.counters = timings, counters\n", "")],
        [f"{S}::test_unet_out_of_memory_redoes_the_chunk_smaller_and_counts_only_the_redone_work"],
    ),
    fault(
        "decode OOM redoes the U-Net",
        [
            (
                E,
                "run_in_chunks(range(latents.shape[0]), self._decode_budget, decode_pairs)",
                "decode_pairs(range(latents.shape[0]))",
            )
        ],
        [f"{S}::test_decode_out_of_memory_halves_the_decode_batch_without_redoing_the_unet"],
    ),
    fault(
        "NaN maps not detected",
        [(E, "        if len(broken):\n", "        if False:\n")],
        [f"{S}::test_nan_response_maps_are_an_error_not_a_label_map"],
    ),
    fault(
        "all-vanished not refused",
        [(E, "if len(vanished) == masks.shape[0]:", "if False:")],
        [f"{S}::test_every_mask_vanishing_is_refused"],
    ),
    fault(
        "dtype/device mismatch ignored",
        [
            (
                E,
                '    if problems:\n        raise ValueError("EmerDiffConfig asks for',
                '    if False:\n        raise ValueError("EmerDiffConfig asks for',
            )
        ],
        [f"{S}::test_config_disagreeing_with_the_loaded_model_is_refused"],
    ),
    fault(
        "force_upcast ignored",
        [("segmentor/loading.py", "return torch.float32 if upcast else dtype", "return dtype")],
        [f"{S}::test_float16_keeps_a_force_upcast_vae_in_float32"],
    ),
]
