"""Tests that fail until a patch to another owner's module lands (not collected by pytest).

Apply a patch with ``git apply tests/soak/pending/<name>.diff``, then:

- ``gateway-ws-closed-transport.diff``: move ``abort_storm.py`` to
  ``tests/integration/test_hardening_abort_storm.py``.
- ``gateway-auth-jwks-key-type.diff``: append ``jwks_key_type.py``'s test to
  ``tests/integration/test_security_jwks.py``.
- ``gateway-redis-pool.diff``: move ``resume_herd.py`` to
  ``tests/integration/test_hardening_resume_herd.py``.
- ``gateway-codes-1002-1007.diff``: drop ``| {1002, 1007}`` from CLOSE_CODES in
  ``tests/integration/test_hardening_ws_fuzz.py``.
"""
