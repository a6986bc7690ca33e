"""``pgcast-token``: mint a connection token for development and tests.

``pgcast-token --sub 42 [--channels 'articles,orders:*'] [--ttl 3600]`` prints an
HS256 token signed with PGCAST_JWT_SECRET (or ``--secret``); ``--private-key``
signs RS256/ES256 instead. A missing or bad key is a one-line error, exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from gateway.config import MIN_SECRET_BYTES
from pgcast.channels import pattern_error


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pgcast-token", description="Mint a pgcast token.")
    p.add_argument("--sub", required=True, help="user id (the token's subject)")
    p.add_argument("--channels", default="", help="comma-separated channel names or globs")
    p.add_argument("--ttl", type=int, default=3600, help="seconds until expiry (default 3600)")
    p.add_argument("--secret", help="HS256 secret (default: PGCAST_JWT_SECRET)")
    p.add_argument("--private-key", help="PEM private key file: sign RS256 (RSA) or ES256 (EC)")
    p.add_argument("--kid", help="key id header (for JWKS rotation)")
    p.add_argument("--aud", help="audience claim")
    p.add_argument("--iss", help="issuer claim")
    return p


def mint(args: argparse.Namespace) -> str:
    """The token for parsed ``args``; ValueError with a one-line reason on bad input."""
    channels = [c.strip() for c in args.channels.split(",") if c.strip()]
    for channel in channels:
        problem = pattern_error(channel)
        if problem is not None:
            raise ValueError(f"--channels {channel!r}: {problem}")
    if args.ttl <= 0:
        raise ValueError("--ttl must be positive")
    now = int(time.time())
    claims: dict[str, object] = {"sub": args.sub, "iat": now, "exp": now + args.ttl}
    if channels:
        claims["channels"] = channels
    if args.aud:
        claims["aud"] = args.aud
    if args.iss:
        claims["iss"] = args.iss
    return _sign(claims, args)


def _sign(claims: dict[str, object], args: argparse.Namespace) -> str:
    headers = {"kid": args.kid} if args.kid else None
    if args.private_key:
        try:
            key = load_pem_private_key(Path(args.private_key).read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise ValueError(f"--private-key: {exc}") from None
        alg = "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256"
        return jwt.encode(claims, key, algorithm=alg, headers=headers)  # type: ignore[arg-type]
    secret = args.secret or os.environ.get("PGCAST_JWT_SECRET", "").strip()
    if not secret:
        raise ValueError("no key: set PGCAST_JWT_SECRET or pass --secret (or --private-key)")
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ValueError(f"the secret must be at least {MIN_SECRET_BYTES} bytes")
    return jwt.encode(claims, secret, algorithm="HS256", headers=headers)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        token = mint(args)
    except ValueError as exc:
        print(f"pgcast-token: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    print(token)  # noqa: T201
    return 0
