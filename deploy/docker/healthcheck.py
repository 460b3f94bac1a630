"""The image's HEALTHCHECK: GET http://127.0.0.1:$PORT/health, healthy on HTTP 200.

Like the Kubernetes probes, 200 means healthy whether /health says "ok" or "degraded" (a missing
provider key is not something a restart fixes). Standard library only, never through a proxy.
"""
import os
import sys
import urllib.request

url = f"http://127.0.0.1:{os.environ.get('PORT') or '8082'}/health"
try:
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=4) as r:
        sys.exit(0 if r.status == 200 else f"{url}: HTTP {r.status}")
except Exception as exc:  # refused, timed out, HTTP 5xx...
    sys.exit(f"{url}: {exc}")
