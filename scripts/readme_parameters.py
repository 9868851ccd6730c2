#!/usr/bin/env python3
"""Rewrite the README's parameter table from the config dataclasses (run from the repo root)."""

from __future__ import annotations

import sys
from pathlib import Path

from xmask3d_ros.config.perception import parameter_table_markdown

BEGIN, END = "<!-- parameters:begin -->", "<!-- parameters:end -->"


def main() -> int:
    readme = Path(__file__).resolve().parent.parent / "README.md"
    text = readme.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{parameter_table_markdown()}{END}{tail}", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
