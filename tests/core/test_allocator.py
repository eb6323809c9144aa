"""`core.allocator`: which environment a trainer process gets for its allocator, and the sentence its log has. That a
real trainer process starts with tcmalloc where it is installed is checked on a finished run in test_jobs.py."""

from __future__ import annotations

from core import allocator

LIBRARY = "libtcmalloc_minimal.so.4"


def test_a_cpu_run_preloads_tcmalloc_before_what_was_preloaded_already(monkeypatch):
    monkeypatch.setattr(allocator, "tcmalloc_library", lambda: LIBRARY)
    environment = allocator.allocator_environment("cpu", {"LD_PRELOAD": "libother.so"})
    assert environment["LD_PRELOAD"] == f"{LIBRARY} libother.so"
    assert int(environment["TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD"]) >= 1 << 40
    assert allocator.allocator_environment("cpu", {})["LD_PRELOAD"] == LIBRARY


def test_gpu_runs_an_opt_out_an_existing_tcmalloc_or_none_installed_change_nothing(monkeypatch):
    monkeypatch.setattr(allocator, "tcmalloc_library", lambda: LIBRARY)
    assert allocator.allocator_environment("cuda", {}) == {}
    assert allocator.allocator_environment("cpu", {allocator.ALLOCATOR_ENV: "system"}) == {}
    assert allocator.allocator_environment("cpu", {"LD_PRELOAD": "/opt/libtcmalloc.so"}) == {}
    monkeypatch.setattr(allocator, "tcmalloc_library", lambda: None)
    assert allocator.allocator_environment("cpu", {}) == {}


def test_without_tcmalloc_the_log_names_the_package_that_brings_it():
    assert "apt-get install libtcmalloc-minimal4" in allocator.allocator_sentence("system malloc")
    assert allocator.allocator_sentence("tcmalloc").startswith("Memory allocator: tcmalloc")
