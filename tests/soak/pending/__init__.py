"""Tests that fail until a patch to another owner's module lands (not collected by pytest).

Each ``*.py`` here names its patch (``*.diff``, apply with ``git apply``); once the
patch is in, move the test into tests/integration/ (file name ``test_...``).
"""
