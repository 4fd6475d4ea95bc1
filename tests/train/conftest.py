"""Fixtures for real MXNet training runs: one tiny seeded demo dataset per session."""

import pytest


@pytest.fixture(scope="session")
def demo_rec(tmp_path_factory):
    import recdata

    return recdata.build(tmp_path_factory.mktemp("demo"))
