"""pgcast's benchmark suite: pgcast against the ceiling, python-socketio and Node Socket.IO.

``python -m bench`` (``make bench``) runs the scenarios on private Postgres and
Redis instances and writes ``bench/results/<date>.json``; ``--quick`` is a
few-second smoke run. Nothing here is imported by pgcast itself.
"""
