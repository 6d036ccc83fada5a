"""Figures as a person reads them. No rich here: the progress display and the messages import it cheaply."""

from __future__ import annotations


def human_bytes(value: float) -> str:
    """Bytes in binary units: 512 B, 1.5 KiB … 2.0 TiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
