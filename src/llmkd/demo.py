"""The embedded demo: a 1,000 / 400 sentence SST-2 sample shipped inside the package (MIT)."""

from __future__ import annotations

from pathlib import Path

DEMO_DIR = Path(__file__).parent / "demo_data"


def demo_config_path() -> Path:
    return DEMO_DIR / "sst2_demo.yaml"
