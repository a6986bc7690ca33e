"""The peers pgcast is measured against: python-socketio and Node Socket.IO, both on Redis.

Each peer is what a team would build instead: Socket.IO servers sharing a Redis
adapter, fed by a classic LISTEN/NOTIFY bridge emitting through a write-only
manager (Python) or ``@socket.io/redis-emitter`` (Node).
"""
