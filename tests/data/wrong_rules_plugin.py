"""Loaded by ``mcjax verify --import``: registers the wrong rules in mcjax's own registry."""

import sys
from pathlib import Path

import mcjax

sys.path.insert(0, str(Path(__file__).parent))
import wrong_rules  # noqa: E402

wrong_rules.register(mcjax.registry.REGISTRY)
