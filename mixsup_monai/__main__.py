"""Entry point of ``python -m mixsup_monai``."""

from __future__ import annotations

from mixsup_monai.cli import main

if __name__ == "__main__":
    main()
