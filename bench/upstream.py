"""Static upstream for the benchmark: realistic OpenAI / Anthropic answers served by nginx.

nginx cannot read a request body, so "stream or not" is decided by the base URL:

* ``http://127.0.0.1:PORT/json/v1/chat/completions``   OpenAI chat completion JSON
* ``http://127.0.0.1:PORT/stream/v1/chat/completions`` OpenAI SSE, 200 chunks, usage chunk, [DONE]
* ``http://127.0.0.1:PORT/json/v1/messages``           Anthropic Messages JSON
* ``http://127.0.0.1:PORT/stream/v1/messages``         Anthropic SSE, 200 text deltas

(``/chat/completions`` and ``/messages`` directly under ``/json`` or ``/stream`` work as well.)
Static files are not allowed for POST by nginx (405), so each location turns the 405 into a 200
with the same file: ``error_page 405 =200 $uri``.

Also renders the config of the nginx reverse proxy used as the "ideal proxy" reference.
"""
from __future__ import annotations

import json
from pathlib import Path

STREAM_CHUNKS = 200
CREATED = 1_730_000_000
OPENAI_MODEL = "gpt-4o-2024-08-06"
ANTHROPIC_MODEL = "claude-sonnet-4-5-20250929"

_PIECES = [
    "I", " will", " run", " the", " test", " suite", " again", " to", " confirm", " that", " the",
    " parser", " fix", " works", ".", " The", " failing", " case", " was", " an", " empty", " token",
    " list", ",", " which", " now", " returns", " early", " instead", " of", " raising", "\n\n",
]


def _piece(i: int) -> str:
    return _PIECES[i % len(_PIECES)]


def _text(n: int) -> str:
    return "".join(_piece(i) for i in range(n))


def _j(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def openai_json() -> bytes:
    return _j(
        {
            "id": "chatcmpl-BenchAbCdEfGhIjKlMnOpQrStUvWx",
            "object": "chat.completion",
            "created": CREATED,
            "model": OPENAI_MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": _text(120),
                        "refusal": None,
                        "tool_calls": [
                            {
                                "id": "call_BenchAbCdEfGhIjKlMnOpQr",
                                "type": "function",
                                "function": {
                                    "name": "Bash",
                                    "arguments": _j({"command": "python -m pytest -q tests/test_parser.py",
                                                     "description": "Run the parser tests"}),
                                },
                            }
                        ],
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {
                "prompt_tokens": 12873,
                "completion_tokens": 161,
                "total_tokens": 13034,
                "prompt_tokens_details": {"cached_tokens": 11776, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0,
                                              "rejected_prediction_tokens": 0},
            },
            "service_tier": "default",
            "system_fingerprint": "fp_bench0001",
        }
    ).encode()


def openai_sse(n: int = STREAM_CHUNKS) -> bytes:
    """``n`` data chunks: role chunk, n-3 content chunks, finish chunk, usage chunk; then [DONE]."""
    base = {"id": "chatcmpl-BenchAbCdEfGhIjKlMnOpQrStUvWx", "object": "chat.completion.chunk",
            "created": CREATED, "model": OPENAI_MODEL, "service_tier": "default",
            "system_fingerprint": "fp_bench0001"}
    out = []

    def chunk(choices, usage=None):
        out.append("data: " + _j({**base, "choices": choices, "usage": usage}) + "\n\n")

    chunk([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": None},
            "logprobs": None, "finish_reason": None}])
    for i in range(n - 3):
        chunk([{"index": 0, "delta": {"content": _piece(i)}, "logprobs": None, "finish_reason": None}])
    chunk([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}])
    chunk([], {"prompt_tokens": 12873, "completion_tokens": n - 3, "total_tokens": 12873 + n - 3,
               "prompt_tokens_details": {"cached_tokens": 11776, "audio_tokens": 0},
               "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                             "accepted_prediction_tokens": 0,
                                             "rejected_prediction_tokens": 0}})
    out.append("data: [DONE]\n\n")
    return "".join(out).encode()


def anthropic_json() -> bytes:
    return _j(
        {
            "id": "msg_01BenchAbCdEfGhIjKlMnOpQr",
            "type": "message",
            "role": "assistant",
            "model": ANTHROPIC_MODEL,
            "content": [
                {"type": "text", "text": _text(120)},
                {"type": "tool_use", "id": "toolu_01BenchAbCdEfGhIjKlMnOp", "name": "Bash",
                 "input": {"command": "python -m pytest -q tests/test_parser.py",
                           "description": "Run the parser tests"}},
            ],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {"input_tokens": 1097, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 11776, "output_tokens": 161,
                      "service_tier": "standard"},
        }
    ).encode()


def anthropic_sse(n: int = STREAM_CHUNKS) -> bytes:
    """The exact Anthropic event sequence with ``n`` text deltas."""
    out = []

    def ev(name, data):
        out.append(f"event: {name}\ndata: {_j(data)}\n\n")

    ev("message_start", {"type": "message_start", "message": {
        "id": "msg_01BenchAbCdEfGhIjKlMnOpQr", "type": "message", "role": "assistant",
        "model": ANTHROPIC_MODEL, "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 1097, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 11776, "output_tokens": 1, "service_tier": "standard"}}})
    ev("content_block_start", {"type": "content_block_start", "index": 0,
                               "content_block": {"type": "text", "text": ""}})
    ev("ping", {"type": "ping"})
    for i in range(n):
        ev("content_block_delta", {"type": "content_block_delta", "index": 0,
                                   "delta": {"type": "text_delta", "text": _piece(i)}})
    ev("content_block_stop", {"type": "content_block_stop", "index": 0})
    ev("message_delta", {"type": "message_delta",
                         "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                         "usage": {"output_tokens": n}})
    ev("message_stop", {"type": "message_stop"})
    return "".join(out).encode()


ANSWERS = {
    "openai.json": openai_json,
    "openai.sse": openai_sse,
    "anthropic.json": anthropic_json,
    "anthropic.sse": anthropic_sse,
}

# (url path, answer file, content type)
ROUTES = [
    ("/json/v1/chat/completions", "openai.json", "application/json"),
    ("/json/chat/completions", "openai.json", "application/json"),
    ("/stream/v1/chat/completions", "openai.sse", "text/event-stream"),
    ("/stream/chat/completions", "openai.sse", "text/event-stream"),
    ("/json/v1/messages", "anthropic.json", "application/json"),
    ("/json/messages", "anthropic.json", "application/json"),
    ("/stream/v1/messages", "anthropic.sse", "text/event-stream"),
    ("/stream/messages", "anthropic.sse", "text/event-stream"),
]


def write_answers(outdir: Path) -> None:
    outdir.mkdir(parents=True, exist_ok=True)
    for name, fn in ANSWERS.items():
        (outdir / name).write_bytes(fn())


def _common(workdir: Path, name: str) -> str:
    tmp = workdir / f"nginx-{name}-tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return f"""
user root;
worker_processes 1;
daemon off;
master_process on;
worker_rlimit_nofile 20000;
pid {workdir}/nginx-{name}.pid;
error_log {workdir}/nginx-{name}.error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
"""


def _http_common(workdir: Path, name: str) -> str:
    tmp = workdir / f"nginx-{name}-tmp"
    return f"""
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    client_body_buffer_size 256k;
    client_max_body_size 16m;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    sendfile on;
    tcp_nodelay on;
    etag off;
    server_tokens off;
"""


def nginx_upstream_conf(workdir: Path, answers: Path, port: int) -> str:
    locs = []
    for path, fname, ctype in ROUTES:
        locs.append(
            f"""        location = {path} {{
            types {{ }}
            default_type {ctype};
            alias {answers / fname};
            error_page 405 =200 $uri;
            add_header Cache-Control no-cache;
        }}"""
        )
    return _common(workdir, "upstream") + f"""
http {{
{_http_common(workdir, "upstream")}
    server {{
        listen 127.0.0.1:{port} backlog=4096 reuseport;
{chr(10).join(locs)}
        location / {{ return 404 '{{"error":"not found"}}'; }}
    }}
}}
"""


def nginx_proxy_conf(workdir: Path, port: int, upstream_port: int) -> str:
    return _common(workdir, "proxy") + f"""
http {{
{_http_common(workdir, "proxy")}
    upstream bench_upstream {{
        server 127.0.0.1:{upstream_port};
        keepalive 256;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 120s;
        }}
    }}
}}
"""


if __name__ == "__main__":
    import sys

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/.work/answers")
    write_answers(out)
    for name in ANSWERS:
        print(f"{name:16s} {(out / name).stat().st_size:7d} bytes")
