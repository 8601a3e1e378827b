"""Break the segmentor by hand, one fault at a time, and list the tests that catch each fault.

    python tests/segmentor/break_by_hand.py [NAME-SUBSTRING ...]

Works on a copy of segmentor/ and tests/ in a temporary folder (the tree is never touched): applies
each fault's edits, runs the named tests there, records which failed. Not collected by pytest; the
README ("How the mechanism tests were checked") holds the last run's table.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

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
    (
        "no fault (baseline)",
        [],
        [OFFSET, INJ, FEAT, f"{M}::test_modulated_runs_follow_the_grid_from_t_m", MAPS, SAMP, LOOP, AGREE, D, S],
    ),
    (
        "offset at every step (batched)",
        [(E, "state.offset = offsets if step == 0 else None", "state.offset = offsets")],
        [OFFSET],
    ),
    ("offset at every step (reference)", [(R, 'if current["step"] == 0 else output', "if True else output")], [OFFSET]),
    (
        "offset at every step (both)",
        [
            (E, "state.offset = offsets if step == 0 else None", "state.offset = offsets"),
            (R, 'if current["step"] == 0 else output', "if True else output"),
        ],
        [OFFSET],
    ),
    (
        "keys not injected (both)",
        [
            (A, "key = key.expand(batch, -1, -1, -1)", "key = _split_heads(attn.to_k(context), attn.heads)"),
            (R, "if replay:", 'if replay and kind == "to_q":'),
        ],
        [INJ],
    ),
    (
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
    (
        "no injection at t_m (both)",
        [
            (A, "if state.inject:", "if state.inject and state.step > 0:"),
            (R, "if replay:", 'if replay and current["step"] > 0:'),
        ],
        [INJ],
    ),
    (
        "DDIM update returns x0",
        [(ST, "return (alpha_prev.sqrt() * x0 + (1 - alpha_prev).sqrt() * eps).to(x.dtype)", "return x0.to(x.dtype)")],
        [SAMP, LOOP],
    ),
    (
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
    (
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
    (
        "no blur",
        [(E, "return gaussian_blur(maps, self.config.blur_sigma * max(maps.shape[-2:]) / 512)", "return maps")],
        [MAPS],
    ),
    (
        "L1 instead of L2",
        [("segmentor/assign.py", "minus.float().clamp(-1, 1), dim=1)", "minus.float().clamp(-1, 1), ord=1, dim=1)")],
        [MAPS, f"{M}::test_difference_maps_clamp_images_and_take_the_l2_norm"],
    ),
    (
        "blur sigma not scaled with the working size",
        [(E, "self.config.blur_sigma * max(maps.shape[-2:]) / 512", "self.config.blur_sigma")],
        [MAPS],
    ),
    (
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
    (
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
    (
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
    (
        "features at another timestep (t_m)",
        [(E, "config.feature_timestep, feature_noise)", "config.modulation_timestep, feature_noise)")],
        [FEAT, f"{M}::test_modulated_runs_follow_the_grid_from_t_m"],
    ),
    (
        "offset on transposed tokens (both)",
        [
            (E, "masks[indices].flatten(1)", "masks[indices].transpose(-1, -2).flatten(1)"),
            (R, "masks[index].flatten()[None, :, None]", "masks[index].T.flatten()[None, :, None]"),
        ],
        [OFFSET],
    ),
    (
        "offset with the wrong sign (both)",
        [
            (E, "offsets = (signs[:, None]", "offsets = (-signs[:, None]"),
            (R, "offset = sign * strength", "offset = -sign * strength"),
        ],
        [OFFSET],
    ),
    (
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
    (
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
    ("default lambda 5", [(C, "modulation_strength: float = 10.0", "modulation_strength: float = 5.0")], [D]),
    ("default relative lambda", [(C, "modulation_relative: bool = False", "modulation_relative: bool = True")], [D]),
    ("default t_f 21", [(C, "feature_timestep: int = 1", "feature_timestep: int = 21")], [D]),
    ("default t_m 261", [(C, "modulation_timestep: int = 281", "modulation_timestep: int = 261")], [D]),
    ("default 25 steps", [(C, "num_inference_steps: int = 50", "num_inference_steps: int = 25")], [D]),
    ("default stride 2", [(C, "step_stride: int = 1", "step_stride: int = 2")], [D]),
    (
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
    (
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
    ("default injection off", [(C, "attention_injection: bool = True", "attention_injection: bool = False")], [D]),
    ("default sampler ddpm", [(C, 'sampler: str = "ddim"', 'sampler: str = "ddpm"')], [D]),
    ("default noising inversion", [(C, 'noising: str = "forward"', 'noising: str = "inversion"')], [D]),
    (
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
    (
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
    (
        "failed attempts counted",
        [("segmentor/runlog.py", "            self.timings, self.counters = timings, counters\n", "")],
        [f"{S}::test_unet_out_of_memory_redoes_the_chunk_smaller_and_counts_only_the_redone_work"],
    ),
    (
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
    (
        "NaN maps not detected",
        [(E, "        if len(broken):\n", "        if False:\n")],
        [f"{S}::test_nan_response_maps_are_an_error_not_a_label_map"],
    ),
    (
        "all-vanished not refused",
        [(E, "if len(vanished) == masks.shape[0]:", "if False:")],
        [f"{S}::test_every_mask_vanishing_is_refused"],
    ),
    (
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
    (
        "force_upcast ignored",
        [("segmentor/loading.py", "return torch.float32 if upcast else dtype", "return dtype")],
        [f"{S}::test_float16_keeps_a_force_upcast_vae_in_float32"],
    ),
]


def main() -> int:
    repo = Path(__file__).resolve().parents[2]
    only = sys.argv[1:]
    results = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for part in ("segmentor", "tests"):
            shutil.copytree(repo / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(repo / "pyproject.toml", root)
        for name, edits, tests in FAULTS:
            if only and not any(o in name for o in only):
                continue
            saved = {path: (root / path).read_text() for path, _, _ in edits}
            try:
                for path, old, new in edits:
                    text = (root / path).read_text()
                    if old not in text:
                        raise SystemExit(f"{name}: {path} no longer contains {old!r}; update the fault")
                    (root / path).write_text(text.replace(old, new))
                proc = subprocess.run(
                    [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", *tests],
                    cwd=root,
                    capture_output=True,
                    text=True,
                    env={**os.environ, "OMP_NUM_THREADS": "1"},
                    check=False,
                )
            finally:
                for path, text in saved.items():
                    (root / path).write_text(text)
            failed = sorted(
                {
                    line.split(" ")[1].split("[")[0].split("::")[-1]
                    for line in proc.stdout.splitlines()
                    if line.startswith("FAILED ")
                }
            )
            results.append({"fault": name, "caught_by": failed})
            print(json.dumps(results[-1]), flush=True)
    missed = [r["fault"] for r in results if not r["caught_by"] and r["fault"] != "no fault (baseline)"]
    print(f"{len(results)} runs; faults no test caught: {missed or 'none'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
