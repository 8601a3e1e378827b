"""Faults of issue 22 (scale and real networks): selection budget, background queue, content memory, private
CAs, cloud-backed uploads, the O(1) cache bound, upstream's MODEL_DIR."""

from tests.faults import fault

SELECTION = "tests/backend/test_selection.py"
BACKGROUND = "tests/backend/test_background.py"
PRIVATE_CA = "tests/backend/test_private_ca.py"
STORAGE = "tests/backend/test_storage_data.py"
BOUND = "tests/backend/test_cache_bound.py"

FAULTS = [
    fault(
        "the time budget is never checked: a big selection runs past Label Studio's timeout",
        [("ml_backend/model.py", "            if time.monotonic() < deadline:\n", "            if True:\n")],
        [f"{SELECTION}::test_a_selection_beyond_the_old_limit_is_answered_and_completed_by_repeats"],
    ),
    fault(
        "MAX_TASKS_PER_REQUEST back at 100: a 150-task selection is refused with 400",
        [("ml_backend/core/settings.py", "    max_tasks_per_request: int = 100_000\n",
          "    max_tasks_per_request: int = 100\n")],
        [f"{SELECTION}::test_a_selection_beyond_the_old_limit_is_answered_and_completed_by_repeats"],
    ),
    fault(
        "a deferred task's segmentation is not queued (the repeat would find nothing cached)",
        [("ml_backend/model.py", "        return self.background.submit(\n",
          "        return True or self.background.submit(\n")],
        [f"{SELECTION}::test_a_selection_beyond_the_old_limit_is_answered_and_completed_by_repeats"],
    ),
    fault(
        "the background queue is unbounded",
        [("ml_backend/segmentation/background.py", "            if len(self._waiting) >= self.capacity:\n",
          "            if False:\n")],
        [f"{BACKGROUND}::test_full_queue_refuses_and_frees_after_work",
         f"{SELECTION}::test_a_full_background_queue_leaves_tasks_for_a_later_request"],
    ),
    fault(
        "the background queue does not dedupe keys: one image segmented once per request that asks",
        [("ml_backend/segmentation/background.py",
          "            if key in self._waiting or (self._busy and self._running == key):\n",
          "            if False:\n")],
        [f"{BACKGROUND}::test_same_key_waiting_or_running_is_not_queued_twice"],
    ),
    fault(
        "a failing job kills the background worker",
        [("ml_backend/segmentation/background.py", "            except Exception:  # one bad job never stops the queue",
          "            except ValueError:  # one bad job never stops the queue")],
        [f"{BACKGROUND}::test_a_failing_job_is_counted_and_the_worker_goes_on"],
    ),
    fault(
        "the remembered content is never consulted: every click downloads the image again",
        [("ml_backend/model.py",
          "        cached = self.cached_segmentation(reference, target)\n        if cached is not None:\n"
          "            return cached\n        image = fetched", "        image = fetched")],
        [f"{SELECTION}::test_a_click_on_a_predicted_task_downloads_nothing"],
    ),
    fault(
        "the content memory is unbounded",
        [("ml_backend/segmentation/references.py", "            while len(self._contents) > self.capacity:",
          "            while False:")],
        [f"{SELECTION}::test_content_memory_is_bounded_least_recently_used_first"],
    ),
    fault(
        "CA_BUNDLE is read but never given to the download session",
        [("ml_backend/images/fetch.py", "    session.verify = requests_verify(ca_bundle)\n", "")],
        [f"{PRIVATE_CA}::test_ca_bundle_trusts_a_private_authority_for_image_hosts",
         f"{PRIVATE_CA}::test_ca_bundle_trusts_a_private_authority_for_label_studio"],
    ),
    fault(
        "REQUESTS_CA_BUNDLE / SSL_CERT_FILE are ignored (only CA_BUNDLE read)",
        [("ml_backend/core/tls.py", 'CA_VARIABLES = ("CA_BUNDLE", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")',
          'CA_VARIABLES = ("CA_BUNDLE",)')],
        [f"{PRIVATE_CA}::test_the_standard_variables_are_honoured",
         f"{PRIVATE_CA}::test_the_label_studio_api_client_trusts_the_same_bundle"],
    ),
    fault(
        "an untrusted certificate is an anonymous connection failure",
        [("ml_backend/images/fetch.py", "        except requests.exceptions.SSLError as error:\n",
          "        except requests.exceptions.InvalidHeader as error:\n")],
        [f"{PRIVATE_CA}::test_an_untrusted_certificate_is_a_named_error"],
    ),
    fault(
        "a storage-data URL on Label Studio's public HOSTNAME is downloaded from that host",
        [("ml_backend/images/resolver.py",
          "                    return self._download(self._label_studio_url(relative))",
          "                    return self._download(reference)")],
        [f"{STORAGE}::test_public_hostname_url_is_read_from_label_studio_url"],
    ),
    fault(
        "any /storage-data/uploaded/ URL on any host is redirected to Label Studio",
        [("ml_backend/images/resolver.py", 'filepaths[-1].startswith("upload/")', "True")],
        [f"{STORAGE}::test_only_label_studios_upload_shape_is_read_that_way"],
    ),
    fault(
        "Label Studio's nginx hand-off (X-Accel-Redirect, empty body) taken for the image",
        [("ml_backend/images/fetch.py", '                    if "X-Accel-Redirect" in response.headers:',
          '                    if False:')],
        [f"{STORAGE}::test_an_nginx_hand_off_is_a_clear_error"],
    ),
    fault(
        "the cache bound scans the folder on every write (O(entries))",
        [("ml_backend/segmentation/cache.py", "            if total <= self.max_bytes and not due:\n",
          "            if False:\n")],
        [f"{BOUND}::test_writes_under_the_bound_add_to_the_total_without_scanning"],
    ),
    fault(
        "a rewritten entry is counted twice in the running total",
        [("ml_backend/segmentation/cache.py", "        replaced = _entry_bytes(label_path, scores_path)",
          "        replaced = 0")],
        [f"{BOUND}::test_writes_under_the_bound_add_to_the_total_without_scanning"],
    ),
    fault(
        "the running total is kept per process: two processes sharing the folder each count only their own",
        [("ml_backend/segmentation/cache.py", "            total = self._read_total() + added\n",
          "            self._own = getattr(self, '_own', 0) + added\n            total = self._own\n")],
        [f"{BOUND}::test_two_processes_sharing_the_folder_keep_one_bound"],
    ),
    fault(
        "the start-up scan does not set the total (drift from removed files is never corrected)",
        [("ml_backend/segmentation/cache.py", "        self._write_total(total)\n        return total\n",
          "        return total\n")],
        [f"{BOUND}::test_the_total_is_reconciled_at_start_up"],
    ),
    fault(
        "upstream's MODEL_DIR read as the model to load",
        [("ml_backend/core/settings.py", '    "MODEL_DIR": "DATA_DIR",', '    "MODEL_DIR": "EMERDIFF_MODEL",')],
        ["tests/backend/test_limits.py::test_upstream_variable_names"],
    ),
]
