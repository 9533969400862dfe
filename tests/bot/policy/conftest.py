"""Fixtures of the policy tests: a bundle of tiny random models (tests/conftest.py `tiny_bundle`)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def bundle_dir(tmp_path: Path, tiny_bundle) -> Path:
    return tiny_bundle(tmp_path / "bundle")
