"""Secrets from `.env` are never printed: values of keys that look secret are masked in every output."""

from __future__ import annotations

import re
from collections.abc import Mapping

# Parts of a key that name a secret: PASS also covers DB_PASS and PASSPHRASE, AUTH an API_AUTH header. A name
# masked that held nothing secret costs a `***`; a secret shown cannot be taken back.
_SECRET = re.compile(r"TOKEN|SECRET|PASS|KEY|CREDENTIAL|AUTH|PRIVATE|COOKIE", re.IGNORECASE)
MASK = "***"


def is_secret(key: str) -> bool:
    return bool(_SECRET.search(key))


def mask_value(key: str, value: str) -> str:
    return MASK if is_secret(key) and value else value


def mask_env(env: Mapping[str, str]) -> dict[str, str]:
    return {key: mask_value(key, value) for key, value in env.items()}
