"""Faults of zero-shot labels (segmentor/zeroshot, ml_backend/labels/zeroshot.py, the label config's words)."""

from tests.faults import fault

DENSE = "segmentor/zeroshot/dense.py"
TEXT = "segmentor/zeroshot/text.py"
CLASSIFY = "segmentor/zeroshot/classify.py"
BACKEND = "ml_backend/labels/zeroshot.py"
CONFIG = "ml_backend/core/label_config.py"
MODEL = "ml_backend/model.py"
T_DENSE = "tests/zeroshot/test_dense.py"
T_CLASSIFY = "tests/zeroshot/test_text_and_classify.py"
T_CONFIG = "tests/zeroshot/test_label_config.py"
T_RULE = "tests/zeroshot/test_one_rule.py"
T_BACKEND = "tests/zeroshot/test_backend.py"

FAULTS = [
    fault("the image centre-cropped to a square again (CLIPImageProcessor's default)",
          [(DENSE, "rows, cols = max(1, round(height * scale / patch)), max(1, round(width * scale / patch))",
            "rows = cols = max(1, round(min(height, width) * scale / patch))")],
          [f"{T_DENSE}::test_whole_image_is_resized_never_cropped"]),
    fault("ClearCLIP keeps the residual and FFN (the wrong block for its mode)",
          [(DENSE, 'if mode in ("clearclip", "naclip"):', 'if mode in ("naclip",):')],
          [f"{T_DENSE}::test_clearclip_is_query_query_attention_alone"]),
    fault("MaskCLIP runs an attention instead of the value path",
          [(DENSE, 'if mode == "maskclip":', 'if mode == "maskclip-value-path":')],
          [f"{T_DENSE}::test_maskclip_is_the_layer_with_each_token_attending_to_itself"]),
    fault("NACLIP without its Gaussian neighbourhood",
          [(DENSE, "weights = softmax(keys, keys, _neighbourhood(tokens, grid, normed.device))",
            "weights = softmax(keys, keys)")],
          [f"{T_DENSE}::test_naclip_is_key_key_attention_with_a_gaussian_neighbourhood"]),
    fault("the grid is not L2-normalised",
          [(DENSE, "patches = F.normalize(patches.float(), dim=-1)", "patches = patches.float()")],
          [f"{T_DENSE}::test_grid_is_normalised_text_space_and_keeps_the_aspect"]),
    fault("prompts averaged before they are normalised",
          [(TEXT, "per_word = F.normalize(encoded.float(), dim=-1).view(", "per_word = encoded.float().view(")],
          [f"{T_CLASSIFY}::test_label_embeddings_are_normalised_template_means_one_row_per_word"]),
    fault("segments pooled on the transposed grid",
          [(CLASSIFY, "pooled = segment_embeddings(grid, label_map)",
            "pooled = segment_embeddings(grid.transpose(1, 0, 2), label_map)")],
          [f"{T_CLASSIFY}::test_a_planted_corner_patch_labels_the_corner_segment_of_a_non_square_image"]),
    fault("a label scores the mean of its words, not its best word",
          [(CLASSIFY, ".T).max(axis=1) for label in labels]", ".T).mean(axis=1) for label in labels]")],
          [f"{T_CLASSIFY}::test_probabilities_follow_the_logit_scale"]),
    fault("a segment exactly at the threshold falls back",
          [(CLASSIFY, "if probability >= threshold:", "if probability > threshold:")],
          [f"{T_CLASSIFY}::test_a_segment_exactly_at_the_threshold_keeps_its_label_just_below_falls_back"]),
    fault("a confident learnt label no longer overrides zero-shot",
          [(BACKEND, "and not (\n            confident and guess.label not in known\n        ):",
            "and not confident:")],
          [f"{T_RULE}::test_each_branch_of_the_rule",
           f"{T_RULE}::test_learning_label_applies_the_rule_with_a_real_classifier"]),
    fault("zero-shot can no longer name a label the memory has no examples of",
          [(BACKEND, "confident and guess.label not in known", "confident and False")],
          [f"{T_RULE}::test_each_branch_of_the_rule",
           f"{T_RULE}::test_learning_label_applies_the_rule_with_a_real_classifier"]),
    fault("below the threshold a segment gets emerdiff-label although the control has a background label",
          [(CONFIG, "return self.background if self.background is not None else self.label", "return self.label")],
          [f"{T_RULE}::test_each_branch_of_the_rule",
           f"{T_BACKEND}::test_first_prediction_labels_every_region_with_a_label_and_its_probability"]),
    fault("the model version leaves out the words (editing a prompt re-labels nothing)",
          [(CONFIG, '"words": [[label, list(words)] for label, words in self.words],',
            '"labels": [label for label, _ in self.words],')],
          [f"{T_BACKEND}::test_the_version_carries_model_mode_words_templates_and_thresholds"]),
    fault("/setup encodes the label words",
          [(MODEL, "t.from_name: t.zero_shot_identity() for t in self.project.targets if t.zero_shot}}",
            "t.from_name: t.zero_shot_identity() for t in self.project.targets if t.zero_shot\n"
            "                and self.runtime.zero_shot.embeddings(dict(t.words)) is not None}}")],
          [f"{T_BACKEND}::test_setup_never_encodes_text_even_with_100_labels"]),
    fault("zero-shot identity in the version of controls that turned zero-shot off",
          [(MODEL, "if self.runtime.zero_shot is not None and any(target.zero_shot for target in "
            "self.project.targets):", "if self.runtime.zero_shot is not None:")],
          [f"{T_BACKEND}::test_zero_shot_off_answers_are_byte_identical_to_the_saved_ones"]),
    fault("the grid cache is keyed without the CLIP identity (a new CLIP reuses the old grids)",
          [(BACKEND, "_digest(self.clip.identity, self.mode)[:16]", "_digest(self.mode)[:16]")],
          [f"{T_BACKEND}::test_cached_answers_equal_fresh_ones_and_changing_clip_never_resegments"]),
    fault("a fresh grid is not rounded as the cache stores it (cached answers differ from fresh ones)",
          [(BACKEND, "grid = stored_features(dense_grid(self.clip, decoded, self.mode))",
            "grid = dense_grid(self.clip, decoded, self.mode)")],
          [f"{T_BACKEND}::test_cached_answers_equal_fresh_ones_and_changing_clip_never_resegments"]),
    fault("the background's default words keep words another label uses",
          [(CONFIG, "tuple(word for word in BACKGROUND_WORDS if word not in owner)", "BACKGROUND_WORDS")],
          [f"{T_CONFIG}::test_the_background_label_gets_stuff_words_that_no_other_label_uses"]),
    fault("word overlaps refused although zero-shot is off (a config that served before is refused)",
          [(CONFIG, "words, background = label_words(control, where) if zero_shot else ((), None)",
            "words, background = label_words(control, where)")],
          [f"{T_CONFIG}::test_word_overlaps_are_not_checked_with_zero_shot_off"]),
    fault("a misspelt <Label> attribute is accepted",
          [(CONFIG, "k.startswith(ATTRIBUTE_PREFIX) and k not in KNOWN_LABEL_ATTRIBUTES", "False")],
          [f"{T_CONFIG}::test_misspelt_attributes_are_refused"]),
]
