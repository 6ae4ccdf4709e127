"""Protobuf sizes without serialising: a message over 2 GB cannot even report its ``ByteSize``."""

from __future__ import annotations

from google.protobuf.message import EncodeError


def larger_than(message, limit: int) -> bool:
    """True when ``message`` serialises to more than ``limit`` bytes (always true past protobuf's 2 GB)."""
    try:
        return message.ByteSize() > limit
    except (EncodeError, ValueError, OverflowError):
        return True
