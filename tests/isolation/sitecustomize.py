"""Loaded by every Python process the test run starts (this folder is on their PYTHONPATH): the guard."""

import os

if os.environ.get("FACECLUSTER_TEST_GUARD"):
    import isolation_guard

    isolation_guard.install()
