"""Logging: level and JSON lines; tracebacks carry no variable values."""
import json
import subprocess
import sys

CODE = r'''
from vandamme.engine.logs import setup_logging
from loguru import logger
setup_logging("INFO", json=True)
logger.debug("hidden")
logger.info("shown {}", 1)
def boom(api_key):
    raise ValueError("x")
try:
    boom("sk-very-secret-value")
except ValueError as e:
    logger.opt(exception=e).error("failed")
'''


def test_json_lines_level_and_no_secret_in_tracebacks():
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=30)
    lines = [json.loads(ln) for ln in r.stderr.splitlines() if ln.strip()]
    messages = [ln["message"] for ln in lines]
    assert messages == ["shown 1", "failed"]
    assert "sk-very-secret-value" not in r.stderr
