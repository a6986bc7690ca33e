"""Running pgcast like production: the local stack runner, TLS, nginx, gunicorn config.

``python -m deploy.stack`` (``make up``) runs 2 listeners and 4 gateways behind
nginx on https://localhost:8443, the same topology as ``docker compose up
--scale gateway=4`` and the manifests in ``k8s/``.
"""
