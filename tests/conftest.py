import sys
from pathlib import Path

from sanic import Sanic

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

# Tests build many apps in one process; Sanic's registry would refuse a second app of a name.
Sanic.test_mode = True

import pytest
from loguru import logger


@pytest.fixture
def caplog(caplog):
    """pytest's caplog also sees loguru records (the project logs through loguru)."""
    handler_id = logger.add(caplog.handler, format="{message}", level=0)
    yield caplog
    logger.remove(handler_id)
