"""A built wheel carries the shipped profiles, so a plain `pip install` works."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_policies(tmp_path: Path) -> None:
    """Every YAML under policies/ is inside the wheel as autoscaler/_builtin_policies/…."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("triton_autoscaler-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        "autoscaler/_builtin_policies/" + p.relative_to(ROOT / "policies").as_posix()
        for p in (ROOT / "policies").rglob("*.yaml")
    }
    assert shipped and shipped <= names
    assert "autoscaler/py.typed" in names
