"""Secrets from `.env` are never printed: values of keys that look secret are masked in every output."""

from __future__ import annotations

import re
from collections.abc import Mapping

_SECRET = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|KEY|CREDENTIAL", re.IGNORECASE)
MASK = "***"


def is_secret(key: str) -> bool:
    return bool(_SECRET.search(key))


def mask_value(key: str, value: str) -> str:
    return MASK if is_secret(key) and value else value


def mask_env(env: Mapping[str, str]) -> dict[str, str]:
    return {key: mask_value(key, value) for key, value in env.items()}
