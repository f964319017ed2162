"""Shared fixtures."""

from __future__ import annotations

import os

import matplotlib
import pytest

matplotlib.use("Agg")


@pytest.fixture(scope="session")
def shared_home(tmp_path_factory):
    """One TKMIA_HOME for the tests that use the tiny profile's victim: it is trained once."""
    return tmp_path_factory.mktemp("tkmia-home")


@pytest.fixture()
def tiny_home(shared_home):
    """Set TKMIA_HOME to the shared folder for one test (kernels and subprocesses inherit it)."""
    old = os.environ.get("TKMIA_HOME")
    os.environ["TKMIA_HOME"] = str(shared_home)
    yield shared_home
    if old is None:
        os.environ.pop("TKMIA_HOME", None)
    else:
        os.environ["TKMIA_HOME"] = old
