import pytest
from loguru import logger


@pytest.fixture
def caplog_loguru():
    """The messages loguru logged during the test."""
    messages: list[str] = []
    handler = logger.add(lambda m: messages.append(m.record["message"]), level="DEBUG")
    yield messages
    logger.remove(handler)
