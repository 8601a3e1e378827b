"""Faults of the hermetic suite (issue 23: temporary homes, doctor's memory and exit status) and of the Docker
tests' cache (issue 22, item 10), each with the tests that catch it.
Run: ``python tests/break_by_hand.py --module hermetic``."""

from __future__ import annotations

from tests.faults import fault

CONFTEST = "tests/conftest.py"
SETTINGS = "ml_backend/core/settings.py"
DOCTOR = "segmentor/doctor.py"
ENGINE = "tests/docker/engine.py"
HERMETIC = "tests/test_hermetic.py"
DOCTOR_TESTS = "tests/segmentor/test_doctor.py"
ENGINE_TESTS = "tests/docker/test_engine.py"

FAULTS = [
    fault(
        "the fixture leaves DATA_DIR alone: a DATA_DIR the user exported (their real label memory) wins",
        [(CONFTEST, '    "DATA_DIR": ".local/share/emerdiff-ml-backend",\n', "")],
        [f"{HERMETIC}::test_each_test_gets_an_empty_home_of_its_own",
         f"{HERMETIC}::test_a_run_of_the_suite_leaves_a_used_home_untouched"],
    ),
    fault(
        "the fixture leaves HOME alone: every default under ~ (Settings(), the CLI, gunicorn) is the real home",
        [(CONFTEST, '    "HOME": ".",\n', "")],
        [f"{HERMETIC}::test_each_test_gets_an_empty_home_of_its_own",
         f"{HERMETIC}::test_default_settings_and_label_memory_stay_in_the_tests_home",
         f"{HERMETIC}::test_a_run_of_the_suite_leaves_a_used_home_untouched"],
    ),
    fault(
        "DATA_DIR's default is computed at import again: every test of a session shares one label memory",
        [(SETTINGS, "    data_dir: Path | None = field(default_factory=default_data_dir)\n",
          "    data_dir: Path | None = default_data_dir()\n")],
        [f"{HERMETIC}::test_default_settings_and_label_memory_stay_in_the_tests_home"],
    ),
    fault(
        "doctor reads MemFree again (SC_AVPHYS_PAGES): a machine that has read files looks full",
        [(DOCTOR, "    return memory.available, memory.total\n", "    return memory.free, memory.total\n")],
        [f"{DOCTOR_TESTS}::test_cpu_memory_is_what_a_process_can_get_memavailable_not_memfree"],
    ),
    fault(
        "doctor fails on a WARNING (a GPU that will run with smaller chunks exits non-zero)",
        [(DOCTOR, 'for f in self.findings if f.level == "PROBLEM"})', 'for f in self.findings if f.level != "OK"})')],
        [f"{DOCTOR_TESTS}::test_the_exit_status_sums_the_codes_of_the_problems_only"],
    ),
    fault(
        "doctor believes the CPU halves its chunk on out-of-memory (only CUDA's OOM is caught)",
        [(DOCTOR, '    if device_type == "cuda" and need["minimum"] <= available:',
          '    if need["minimum"] <= available:')],
        [f"{DOCTOR_TESTS}::test_on_the_cpu_nothing_halves_so_not_fitting_is_a_problem"],
    ),
    fault(
        "doctor sizes the CPU's first chunk as the GPU's (64 runs, not 16)",
        [(DOCTOR, "    return _MAX_GPU_BATCH if device.type == \"cuda\" else _CPU_BATCH\n",
          "    return _MAX_GPU_BATCH\n")],
        [f"{DOCTOR_TESTS}::test_doctor_names_the_finding_that_made_its_exit_status_non_zero"],
    ),
    fault(
        "the base image's step expects the Docker cache folder to exist (only starting dockerd made it)",
        [(ENGINE, "    return tempfile.TemporaryDirectory(dir=cache_dir())\n",
          "    return tempfile.TemporaryDirectory(dir=CACHE)\n")],
        [f"{ENGINE_TESTS}::test_each_step_makes_the_cache_folder_it_needs"],
    ),
    fault(
        "the Docker cache goes back under the user's home",
        [(ENGINE, 'or REPO_ROOT / ".cache" / "emerdiff-docker").resolve()',
          'or Path.home() / ".cache" / "emerdiff-docker").resolve()')],
        [f"{ENGINE_TESTS}::test_the_cache_lies_in_the_checkouts_ignored_folder_never_in_a_home"],
    ),
]
