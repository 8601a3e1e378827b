"""Defences of issue 19 (label learning, webhooks, the label memory, basic auth, smart-tool context), each broken
as a maintainer might, with the tests that catch it. Run: ``python tests/break_by_hand.py --module hostile``."""

from __future__ import annotations

from tests.faults import fault

LEARNING = "ml_backend/labels/learning.py"
MEMORY = "ml_backend/labels/memory.py"
HOSTILE_WEBHOOKS = "tests/labels/test_hostile_webhooks.py"
HOSTILE = "tests/backend/test_hostile.py"

FAULTS = [
    fault("project ids read with str.isdigit() again ('²' passes, int() fails)",
          [(LEARNING, "int(head) if _ASCII_DIGITS.fullmatch(head) else None", "int(head) if head.isdigit() else None")],
          [f"{HOSTILE_WEBHOOKS}::test_setup_and_predict_with_odd_project_ids_answer_without_learnt_labels"]),
    fault("ids no longer bounded to SQLite's 64-bit integers",
          [(LEARNING, "    if not 0 <= value <= MAX_ID:\n", "    if False:\n")],
          [f"{HOSTILE_WEBHOOKS}::test_odd_ids_and_numbers_get_a_400[annotation id beyond 64 bits]"]),
    fault("annotation.task taken as it comes (a list becomes a dict key)",
          [(LEARNING, 'return None if task is None else _integer(task, "annotation.task")', "return task")],
          [f"{HOSTILE_WEBHOOKS}::test_odd_ids_and_numbers_get_a_400[annotation.task a list]"]),
    fault("a malformed region is skipped instead of refused (the annotation's examples are wiped)",
          [(LEARNING, 'raise LearningError(f"{where} must have a \'from_name\' string and a \'value\' object (got "\n'
                      '                            f"from_name={from_name!r:.40})")', "return")],
          [f"{HOSTILE_WEBHOOKS}::test_a_malformed_result_is_refused_and_keeps_the_stored_examples"]),
    fault("the memory's schema is checked once per process (a deleted file is not made again)",
          [(MEMORY, "                    self._ensure_schema(connection)\n",
            "                    if not getattr(self, '_ready', False):\n"
            "                        self._ensure_schema(connection)\n"
            "                        self._ready = True\n")],
          [f"{HOSTILE_WEBHOOKS}::test_a_memory_deleted_while_running_is_made_again"]),
    fault("a memory locked by another process is not recognised as busy (500, the annotation lost)",
          [(LEARNING, "            raise MemoryUnavailableError(str(error)) from error", "            raise")],
          [f"{HOSTILE_WEBHOOKS}::test_a_memory_locked_by_another_process_is_retried_in_the_background"]),
    fault("an uncached image is segmented in the request thread again",
          [(LEARNING, "cached_only if cached is not None else segment, segment)", "segment, segment)")],
          [f"{HOSTILE_WEBHOOKS}::test_an_uncached_image_is_learnt_in_the_background"]),
    fault("a webhook is applied in its request while older ones still wait (arrival order lost)",
          [(LEARNING, "            if self.jobs.pending() == 0:\n", "            if True:\n")],
          [f"{HOSTILE_WEBHOOKS}::test_webhooks_queue_behind_a_busy_learner_in_order_and_a_full_queue_says_so"]),
    fault("a full learning queue drops the webhook silently",
          [(LEARNING, "                raise LearningQueueFullError(message)\n", "                return {}\n")],
          [f"{HOSTILE_WEBHOOKS}::test_webhooks_queue_behind_a_busy_learner_in_order_and_a_full_queue_says_so"]),
    fault("Label Studio unreachable is not caught on START_TRAINING (500 internal)",
          [("ml_backend/labels/sync.py", "    except httpx.HTTPError as error:  # refused, unreachable, timed out",
            "    except httpx.HTTPStatusError as error:  # refused, unreachable, timed out")],
          [f"{HOSTILE_WEBHOOKS}::test_start_training_with_label_studio_unreachable_names_it"]),
    fault("the webhook body's label config is trusted although Label Studio can be asked",
          [("ml_backend/model.py", "        if self.projects is None:\n            return body_project_config(",
            "        if True:\n            return body_project_config(")],
          [f"{HOSTILE_WEBHOOKS}::test_with_label_studio_configured_its_label_config_decides_not_the_body"]),
    fault("deletes applied for projects Label Studio does not have",
          [(LEARNING, "            if known_project is not None:", "            if False:")],
          [f"{HOSTILE_WEBHOOKS}::test_with_label_studio_configured_its_label_config_decides_not_the_body"]),
    fault("updated_at ignored: an older update replayed after a newer one wins",
          [(MEMORY, "and updated_at < stored[0]:", "and updated_at < 0:")],
          [f"{HOSTILE_WEBHOOKS}::test_an_older_update_replayed_after_a_newer_one_does_not_win"]),
    fault("basic-auth credentials compared in UTF-8 only (Label Studio's Latin-1 never matches)",
          [("ml_backend/service/app.py",
            "matches = [hmac.compare_digest(given, utf8), hmac.compare_digest(given, latin1)]",
            "matches = [hmac.compare_digest(given, utf8)]")],
          ["tests/backend/test_basic_auth_encoding.py::test_label_studios_own_header_authenticates"]),
    fault("a BASIC_AUTH_PASS Label Studio cannot send is accepted at start-up",
          [("ml_backend/core/settings.py", "if secret is not None and not _latin1(secret):", "if False:")],
          ["tests/backend/test_basic_auth_encoding.py::test_a_password_label_studio_cannot_send_is_refused_at_start"]),
    fault("MAX_SMART_PROMPTS not enforced",
          [("ml_backend/smart_tools/prompts.py", "if max_prompts is not None and len(result) > max_prompts:",
            "if False:")],
          [f"{HOSTILE}::test_hostile_smart_tool_context_is_a_context_error[more prompts than MAX_SMART_PROMPTS]"]),
    fault("smart-tool finiteness check overflows on integers no float holds (500 for the batch)",
          [("converters/values.py",  # the shared check the smart tools call
            "    try:\n        return math.isfinite(value)\n    except OverflowError:\n        return False",
            "    return math.isfinite(value)")],
          [f"{HOSTILE}::test_hostile_smart_tool_context_is_a_context_error[keypoint beyond a float]"]),
]
