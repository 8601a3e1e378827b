"""Faults of the converters (issue 18's "converters" survivors, issue 19's hostile input, issue 22's RLE encoder and
YOLO export), each with the quick tests that catch it. Run: ``python tests/break_by_hand.py --module converters``."""

from __future__ import annotations

from tests.faults import fault

BRUSH = "converters/brush.py"
LABELSTUDIO = "converters/labelstudio.py"
LS2COCO = "converters/ls2coco.py"
LS2YOLO = "converters/ls2yolo.py"
RLE_TESTS = "tests/converters/test_brush_rle.py"
HOSTILE = "tests/converters/test_hostile.py"
YOLO = "tests/converters/test_yolo.py"

FAULTS = [
    fault(
        "the RLE length bound counts bits, not bytes (padding 8x too long is decoded)",
        [(BRUSH, "    return (HEADER_BITS + values * token_bits + 7) // 8 + 1",
          "    return HEADER_BITS + values * token_bits + 8")],
        [f"{RLE_TESTS}::test_padding_past_any_encoding_is_refused_before_decoding",
         f"{HOSTILE}::test_brush_rle_padded_past_any_encoding_is_refused_by_the_shared_region_reader"],
    ),
    fault(
        "the region validator checks every RLE item before the list's length (a megabyte of junk is walked)",
        [(LABELSTUDIO, "not all(_is_byte(byte) for byte in rle[:7])", "not all(_is_byte(byte) for byte in rle)")],
        [f"{HOSTILE}::test_brush_rle_padded_past_any_encoding_is_refused_by_the_shared_region_reader"],
    ),
    fault(
        "the decoder accepts words up to 32 bits (Label Studio's JS does; values overflow a byte)",
        [(BRUSH, "    if word_bits > WORD_BITS:", "    if word_bits > 32:")],
        [f"{RLE_TESTS}::test_word_sizes_over_8_bits_are_refused"],
    ),
    fault(
        "the region validator lets 16-bit words through",
        [(LABELSTUDIO, "    if word_bits > 8:", "    if word_bits > 16:")],
        [f"{HOSTILE}::test_brush_rle_word_size_over_8_bits_is_a_region_error"],
    ),
    fault(
        "a literal run past the declared values is not refused (numpy raises a shape error instead)",
        [(BRUSH, "            if stop > num:", "            if stop > num + 1:")],
        [f"{RLE_TESTS}::test_truncated_or_overshooting_data_is_refused"],
    ),
    fault(
        "the encoder puts runs of exactly 256 values in the 16-bit field",
        [(BRUSH, "[length == 1, length <= 8, length <= 16, length <= 256],",
          "[length == 1, length <= 8, length <= 16, length < 256],"),
         (BRUSH, "np.select([length <= 8, length <= 16, length <= 256], [14, 15, 19], 27)",
          "np.select([length <= 8, length <= 16, length < 256], [14, 15, 19], 27)")],
        [f"{RLE_TESTS}::test_value_encoder_is_byte_identical_to_the_sdk_across_run_boundaries"],
    ),
    fault(
        "the encoder pads to the next byte only (the SDK adds a whole zero byte on a byte boundary)",
        [(BRUSH, "    bits = np.zeros(total + 8 - total % 8, dtype=np.uint8)",
          "    bits = np.zeros(total + (-total % 8), dtype=np.uint8)")],
        [f"{RLE_TESTS}::test_mask_encoder_is_byte_identical_to_the_sdk"],
    ),
    fault(
        "the encoder splits a run of exactly 65,536 values into two chunks",
        [(BRUSH, "(lengths - 1) // _CHUNK + 1, 1)", "lengths // _CHUNK + 1, 1)")],
        [f"{RLE_TESTS}::test_mask_encoder_is_byte_identical_to_the_sdk"],
    ),
    fault(
        "brush_region's encoder writes the pixel count, not the RGBA value count, in the header",
        [(BRUSH, "    return _encode_runs(values * np.uint8(255), lengths * 4, mask.size * 4)",
          "    return _encode_runs(values * np.uint8(255), lengths * 4, mask.size)")],
        [f"{RLE_TESTS}::test_mask_encoder_is_byte_identical_to_the_sdk"],
    ),
    fault(
        "rectangle corners are not checked after scaling to pixels (inf/nan reach the rasteriser)",
        [(LABELSTUDIO, "    if not np.isfinite(corners).all():", "    if np.isnan(corners).all():")],
        [f"{HOSTILE}::test_numbers_that_overflow_are_region_errors"],
    ),
    fault(
        "the finiteness check lets OverflowError out for integers no float holds",
        [("converters/values.py", "    except OverflowError:\n        return False",
          "    except ZeroDivisionError:\n        return False")],
        [f"{HOSTILE}::test_numbers_that_overflow_are_region_errors",
         f"{HOSTILE}::test_evaluate_refuses_what_cocoeval_cannot_read"],
    ),
    fault(
        "'latest' ignores the id when updated_at ties (the first listed wins)",
        [(LS2COCO, "    return seconds, entry_id if is_int(entry_id) else -math.inf", "    return seconds, 0")],
        [f"{HOSTILE}::test_latest_annotation_ties_on_updated_at_are_broken_by_the_higher_id"],
    ),
    fault(
        "'latest' compares ids as floats (ties above 2**53)",
        [(LS2COCO, "    return seconds, entry_id if is_int(entry_id) else -math.inf",
          "    return seconds, float(entry_id) if is_int(entry_id) else -math.inf")],
        [f"{HOSTILE}::test_ids_above_2_to_the_53_break_ties_exactly"],
    ),
    fault(
        "free category ids are counted from 1 without skipping explicit ones",
        [(LS2COCO, "    free = (i for i in itertools.count(1) if i not in explicit.values())",
          "    free = iter(itertools.count(1))")],
        [f"{HOSTILE}::test_explicit_and_free_category_ids_never_collide"],
    ),
    fault(
        "the detections list keeps only the first ring of a multi-piece prediction",
        [("converters/coco.py", "segmentation = _rle(coco_mask.decode(coco_mask.merge(rles)))",
          "segmentation = _rle(coco_mask.decode(coco_mask.merge(rles[:1])))")],
        [f"{HOSTILE}::test_multi_piece_predictions_are_scored_on_every_piece"],
    ),
    fault(
        "control characters (NUL) stay in file names",
        [("converters/images.py", '    cleaned = _CONTROL.sub("", unquote(path)).replace',
          "    cleaned = unquote(path).replace")],
        [f"{HOSTILE}::test_file_names_hold_no_control_characters",
         f"{HOSTILE}::test_ls2coco_file_names_drop_nul_bytes"],
    ),
    fault(
        "evaluate hands the caller's dataset to COCOeval, which rewrites its segmentations",
        [("converters/evaluate.py", "    coco.dataset = copy.deepcopy(dataset)", "    coco.dataset = dataset")],
        [f"{HOSTILE}::test_evaluate_leaves_the_callers_dataset_as_it_was"],
    ),
    fault(
        "evaluate checks detections' references by membership only (a list id raises TypeError)",
        [("converters/evaluate.py", "    if not is_int(image_id) or image_id not in sizes:",
          "    if image_id not in sizes:")],
        [f"{HOSTILE}::test_evaluate_refuses_what_cocoeval_cannot_read"],
    ),
    fault(
        "the CLI reader lets RecursionError out of json.loads",
        [("converters/__main__.py", "    except RecursionError as error:\n        raise ExportFormatError",
          "    except ZeroDivisionError as error:\n        raise ExportFormatError")],
        [f"{HOSTILE}::test_cli_refuses_hostile_files_in_one_line_with_exit_2"],
    ),
    fault(
        "task ids are not checked (a list id is unhashable deep inside)",
        [(LS2COCO, "    if not is_id(task_id):", "    if task_id is None:")],
        [f"{HOSTILE}::test_ls2coco_and_coco2ls_refuse_huge_scores_and_list_ids"],
    ),
    fault(
        "percent coordinates rounded to 4 decimals again",
        [(LABELSTUDIO, "_PERCENT_DECIMALS = 6", "_PERCENT_DECIMALS = 4")],
        [f"{HOSTILE}::test_percent_rounding_never_moves_a_pixel_centre"],
    ),
    fault(
        "a rotated rectangle's height is written in percent of the image width",
        [(LABELSTUDIO, '"height": 100.0 * float(np.hypot(*across)) / height,',
          '"height": 100.0 * float(np.hypot(*across)) / width,')],
        [f"{HOSTILE}::test_rotated_rectangles_on_non_square_images_round_trip_through_percent"],
    ),
    fault(
        "a polygon point exactly at 0 % is refused",
        [(LABELSTUDIO, "        if not all(0.0 <= c <= 100.0 for c in point):",
          "        if not all(0.0 < c <= 100.0 for c in point):")],
        [f"{HOSTILE}::test_values_exactly_at_the_limits"],
    ),
    fault(
        "an image of exactly MAX_PIXELS is refused",
        [(LABELSTUDIO, "    if region[\"original_width\"] * region[\"original_height\"] > MAX_PIXELS:",
          "    if region[\"original_width\"] * region[\"original_height\"] >= MAX_PIXELS:")],
        [f"{HOSTILE}::test_values_exactly_at_the_limits"],
    ),
    fault(
        "YOLO class indices are the COCO category ids (category=\"7\") instead of 0.. in config order",
        [(LS2YOLO, "    classes = {name: index for index, name in enumerate(names)}",
          "    classes = content.categories")],
        [f"{YOLO}::test_yolo_labels_read_back_to_the_label_studio_masks"],
    ),
    fault(
        "YOLO coordinates divided by (height, width)",
        [(LS2YOLO, "    points = np.clip(ring / [width, height], 0.0, 1.0)",
          "    points = np.clip(ring / [height, width], 0.0, 1.0)")],
        [f"{YOLO}::test_yolo_labels_read_back_to_the_label_studio_masks"],
    ),
    fault(
        "YOLO keeps only the largest piece of a brush mask",
        [(LS2YOLO, "            rings = mask_to_polygons(region_to_mask(region), min_area=0)",
          "            rings = mask_to_polygons(region_to_mask(region), min_area=0)[:1]")],
        [f"{YOLO}::test_brush_pieces_become_one_line_each_and_holes_are_filled"],
    ),
]
