"""The gateway: many stateless processes pushing Redis channel messages to clients.

Entry points: ``gateway.cli:main`` (pgcast-gateway), ``gateway.app:gunicorn_app``
(gunicorn), ``gateway.token_cli:main`` (pgcast-token). See README, "Protocol".
"""
