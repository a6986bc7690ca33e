"""pgcast's shared kernel: what the listener and the gateway must agree on.

No aiohttp, asyncpg or redis imports here: only names, formats and plain helpers.
"""

__version__ = "0.1.0"
