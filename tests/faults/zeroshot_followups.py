"""Faults of issue 21's follow-ups: the modes checked against their sources, the CLIP preflight, the warning
for labels CLIP cannot tell apart, doctor's CLIP line."""

from tests.faults import fault

DENSE = "segmentor/zeroshot/dense.py"
BACKEND = "ml_backend/labels/zeroshot.py"
PREFLIGHT = "docker/preflight.py"
DOCTOR = "segmentor/doctor.py"
T_DENSE = "tests/zeroshot/test_dense.py"
T_NEAR = "tests/zeroshot/test_near_duplicates.py"
T_DEPLOY = "tests/e2e/test_deploy_files.py"
T_BACKEND = "tests/zeroshot/test_backend.py"

FAULTS = [
    fault("NACLIP's sigma read as a variance (exp(-d^2 / 2 sigma) instead of NACLIP's exp(-d^2 / 2 sigma^2))",
          [(DENSE, "torch.exp(-distances / (2 * NACLIP_SIGMA**2))", "torch.exp(-distances / (2 * NACLIP_SIGMA))")],
          [f"{T_DENSE}::test_naclip_is_key_key_attention_with_a_gaussian_neighbourhood"]),
    fault("SCLIP drops the residual and FFN as ClearCLIP does (SCLIP's clip/model.py keeps both)",
          [(DENSE, 'if mode in ("clearclip", "naclip"):', 'if mode in ("clearclip", "naclip", "sclip"):')],
          [f"{T_DENSE}::test_sclip_sums_query_query_and_key_key_attention_and_keeps_residual_and_ffn"]),
    fault("preflight never checks EMERDIFF_CLIP_MODEL (a missing CLIP folder found only at load)",
          [(PREFLIGHT, "    check_clip(settings.clip_model)\n", "")],
          [f"{T_DEPLOY}::test_preflight_checks_the_clip_reference_like_the_model_path"]),
    fault("preflight takes `bundled` on trust (an image built without the bundled CLIP)",
          [(PREFLIGHT, 'if not (BUNDLED_CLIP_DIR / "config.json").is_file():', "if False:")],
          [f"{T_DEPLOY}::test_preflight_checks_the_clip_reference_like_the_model_path"]),
    fault("near duplicates compared by each label's first word only (a label scores its best word)",
          [(BACKEND, "similarity = embedded[first] @ embedded[second].T",
            "similarity = embedded[first][:1] @ embedded[second][:1].T")],
          [f"{T_NEAR}::test_two_labels_with_nearly_the_same_words_are_named_with_their_cosine"]),
    fault("a near-duplicate pair is named again whenever another label is added",
          [(BACKEND, "if cosine > NEAR_DUPLICATE_COSINE and pair not in self._compared:",
            "if cosine > NEAR_DUPLICATE_COSINE:")],
          [f"{T_NEAR}::test_the_warning_is_logged_once_not_at_every_prediction"]),
    fault("every close pair logged (a weak CLIP floods the log with one line per pair)",
          [(BACKEND, "close[:NEAR_DUPLICATES_LOGGED]:", "close:")],
          [f"{T_NEAR}::test_many_close_pairs_are_named_up_to_a_limit_then_counted"]),
    fault("doctor's CLIP line back in GiB (the bundled CLIP reads 0.00 GiB)",
          [(DOCTOR, "weights {_mib(need['weights'])}", "weights {_gib(need['weights'])}")],
          [f"{T_BACKEND}::test_doctor_reports_clips_weights_and_grid_memory"]),
]
