import sys
from pathlib import Path

from sanic import Sanic

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

# Tests build many apps in one process; Sanic's registry would refuse a second app of a name.
Sanic.test_mode = True
