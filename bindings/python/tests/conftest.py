import os
from pathlib import Path

import pytest

# The tests import the installed docker_delta (test-installed.sh runs a copy of them
# against the wheel installed in a fresh venv), never the source tree's.
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def samples() -> Path:
    """samples/ of the docker-delta checkout: $DOCKER_DELTA_SAMPLES (test-installed.sh sets
    it, the tests then running from a copy), else found from here (bindings/python/tests)."""
    env = os.environ.get("DOCKER_DELTA_SAMPLES")
    path = Path(env) if env else HERE.parent.parent.parent / "samples"
    if not (path / "app-1.tar").is_file():
        pytest.fail(f"no sample images in {path}: set DOCKER_DELTA_SAMPLES to the checkout's samples/")
    return path


@pytest.fixture(scope="session")
def old_ref(samples: Path) -> str:
    return f"docker-archive:{samples / 'app-1.tar'}"


@pytest.fixture(scope="session")
def new_ref(samples: Path) -> str:
    return f"docker-archive:{samples / 'app-2.tar'}"


@pytest.fixture(scope="session")
def docker_host() -> str:
    """A test engine's socket, or skip (fail under DOCKER_DELTA_REQUIRE_ENGINES=1)."""
    host = os.environ.get("DOCKER_DELTA_TEST_DOCKER26") or os.environ.get("DOCKER_DELTA_TEST_DOCKER20")
    if not host:
        if os.environ.get("DOCKER_DELTA_REQUIRE_ENGINES") == "1":
            pytest.fail("DOCKER_DELTA_REQUIRE_ENGINES=1 but no DOCKER_DELTA_TEST_DOCKER26/20")
        pytest.skip("no test Docker engine (eval \"$(scripts/engines.sh env)\")")
    return host
