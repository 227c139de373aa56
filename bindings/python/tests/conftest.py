import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent.parent
sys.path.insert(0, str(HERE.parent))


@pytest.fixture(scope="session")
def samples() -> Path:
    return REPO / "samples"


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
