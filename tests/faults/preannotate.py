"""Faults of the whole-project job (``preannotate``) and of rebuilding the label memory from Label Studio's API
(``memory rebuild``, "Start Training"), each with the quick tests that catch it."""

from tests.faults import fault

CLIENT = "ml_backend/core/label_studio_client.py"
API = "ml_backend/preannotate/labelstudio.py"
JOB = "ml_backend/preannotate/job.py"
CLI = "ml_backend/preannotate/cli.py"
LEDGER = "ml_backend/preannotate/ledger.py"
SYNC = "ml_backend/labels/sync.py"
LEARNING = "ml_backend/labels/learning.py"
HOSTILE = "tests/preannotate/test_hostile_label_studio.py"
JOB_TESTS = "tests/preannotate/test_job.py"
REBUILD = "tests/labels/test_rebuild.py"

FAULTS = [
    # --- the listing -------------------------------------------------------------------------------------
    fault("a page that repeats only tasks listed before is asked past (no end without a total)",
          [(CLIENT, "        if new == 0:\n", "        if new < 0:\n")],
          [f"{HOSTILE}::test_task_pages_that_repeat_forever_end_the_scan",
           f"{REBUILD}::test_a_listing_that_fails_forgets_nothing"]),
    fault("a task listed twice (pages shifted while paging) is yielded twice",
          [(CLIENT, "            if key(item) not in seen:\n", "            if True:\n")],
          [f"{HOSTILE}::test_tasks_listed_twice_are_segmented_once"]),
    fault("the scan asks for the page after the one that reached the total (Label Studio answers 404)",
          [(CLIENT, "(len(seen) >= total or page * page_size >= total)", "len(seen) > total")],
          [f"{HOSTILE}::test_a_page_that_reaches_the_total_is_the_last"]),
    # --- every request ----------------------------------------------------------------------------------
    fault("the request's deadline is never set: a trickled answer holds the job",
          [(CLIENT, "        _deadline.set(time.monotonic() + self.seconds)\n", "")],
          [f"{HOSTILE}::test_a_trickled_answer_meets_the_deadline"]),
    fault("the deadline network backend is not installed (an httpx/httpcore upgrade renamed the hook)",
          [(CLIENT, "        self._pool._network_backend = _DeadlineBackend(self._pool._network_backend)\n", "")],
          [f"{HOSTILE}::test_a_trickled_answer_meets_the_deadline"]),
    fault("redirects are followed: a 307 sends the create to another host and counts its answer",
          [(CLIENT, "timeout=seconds, follow_redirects=False)", "timeout=seconds, follow_redirects=True)")],
          [f"{HOSTILE}::test_a_create_redirected_to_another_host_is_not_counted",
           f"{HOSTILE}::test_a_create_redirected_with_302_is_not_resent_as_a_get"]),
    fault("an error line carries Label Studio's whole body",
          [(CLIENT, "    return text if len(text) <= limit else", "    return text if True else")],
          [f"{HOSTILE}::test_a_huge_error_body_is_cut"]),
    fault("429 (too many requests) is taken for a refusal instead of retried",
          [(API, "_TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})",
            "_TRANSIENT_STATUSES = frozenset({408, 500, 502, 503, 504})")],
          [f"{HOSTILE}::test_429_is_retried"]),
    # --- answers ------------------------------------------------------------------------------------------
    fault("a create counts whatever Label Studio answered (its id), not the prediction it was sent",
          [(API, 'if fields.get("task") != task or fields.get("model_version") != version:',
            'if fields.get("id") is None:')],
          [f"{HOSTILE}::test_a_create_answered_with_another_prediction_is_not_counted"]),
    fault("ids are checked to be integers but not to fit SQLite's 64 bits",
          [(API, "isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID",
            "isinstance(value, int) and not isinstance(value, bool) and 1 <= value")],
          [f"{HOSTILE}::test_task_ids_beyond_64_bits_or_not_integers_are_refused"]),
    fault("a task list that is an object is iterated as one (its keys taken for tasks)",
          [(API, "        if not isinstance(found, list):\n", "        if isinstance(found, str):\n")],
          [f"{HOSTILE}::test_answers_of_the_wrong_shape_are_refused"]),
    # --- the run ----------------------------------------------------------------------------------------
    fault("tasks in flight are released only on an outage, not when Label Studio's answer stops the run",
          [(JOB, "    except BaseException:\n        # Whatever stopped the run",
            "    except (LabelStudioUnavailableError, KeyboardInterrupt):\n        # Whatever stopped the run")],
          [f"{HOSTILE}::test_a_create_redirected_with_302_is_not_resent_as_a_get"]),
    fault("a run stopped by an unusable answer exits 75 (run again) instead of 2",
          [(CLI, "    if summary.refused:\n", "    if summary.refused and False:\n")],
          [f"{HOSTILE}::test_a_create_answered_with_another_prediction_is_not_counted"]),
    fault("a task is given up only after more than --max-attempts failures",
          [(JOB, "entry.attempts >= options.max_attempts", "entry.attempts > options.max_attempts")],
          [f"{JOB_TESTS}::test_max_attempts_one_gives_up_after_the_first_failure"]),
    fault("--limit counts the tasks left over wrongly",
          [(JOB, "        summary.left = len(todo) - options.limit\n",
            "        summary.left = len(todo) - options.limit - 1\n")],
          [f"{JOB_TESTS}::test_limit_of_exactly_the_tasks_left_reaches_them_all"]),
    fault("a ledger holding another program's `tasks` table is used (and fails mid-run)",
          [(LEDGER, '            self._db.execute("SELECT server, project, task, model_version, state, prediction, '
                    'reason, attempts, "\n                             "updated FROM tasks LIMIT 0")\n', "")],
          [f"{HOSTILE}::test_a_corrupt_or_foreign_ledger_is_a_clear_error"]),
    fault("--api-key-file is ignored",
          [(CLIENT, "    if args.api_key_file is not None:\n", "    if False:\n")],
          [f"{HOSTILE}::test_the_key_can_come_from_a_file"]),
    # --- rebuilding the label memory --------------------------------------------------------------------
    fault("a rebuild skips an annotation that was edited (only its id compared)",
          [(LEARNING, 'if known.get(annotation_id) == source and not annotation.get("was_cancelled"):',
            'if annotation_id in known and not annotation.get("was_cancelled"):')],
          [f"{REBUILD}::test_rebuild_learns_edits_forgets_deletions_and_skips_the_unchanged"]),
    fault("a rebuild forgets nothing that Label Studio deleted",
          [(LEARNING, 'report["forgotten"] = self.memory.delete_annotations(project, set(known) - seen)',
            'report["forgotten"] = self.memory.delete_annotations(project, set())')],
          [f"{REBUILD}::test_rebuild_learns_edits_forgets_deletions_and_skips_the_unchanged"]),
    fault("an annotation's source ignores its task's data: a changed image is not learnt again",
          [(LEARNING, 'payload = json.dumps([annotation.get("result"), task.get("data")]',
            'payload = json.dumps([annotation.get("result")]')],
          [f"{REBUILD}::test_a_task_whose_image_changed_is_learnt_again"]),
    fault("a task page that fails reads as the end of the listing: the rest is forgotten",
          [(SYNC, "            if error.status_code == 404 and page > 1:",
            "            if error.status_code in (404, 503) and page > 1:")],
          [f"{REBUILD}::test_a_listing_that_fails_forgets_nothing"]),
    fault("cloud images are presigned at the API's path instead of Label Studio's /tasks/<id>/presign/",
          [("ml_backend/images/resolver.py", 'f"/tasks/{task_id}/presign/?fileuri=',
            'f"/api/tasks/{task_id}/presign/?fileuri=')],
          [f"{REBUILD}::test_rebuild_learns_edits_forgets_deletions_and_skips_the_unchanged"]),
]
