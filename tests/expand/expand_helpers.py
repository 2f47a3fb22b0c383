"""Test helpers for the expander tests: a small concept list and a real HTTP server on
127.0.0.1 that answers the OpenAI chat API with scripted replies (429, 500, malformed
JSON, slow replies, empty choices, ...)."""
from __future__ import annotations

import json
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# name, aliases, category: a slice of the Twemoji vocabulary, written out so these tests do
# not need the built dataset.
SMALL_CONCEPTS = [
    ("running shoe", ["athletic shoe"], "Objects"), ("hot beverage", ["coffee"], "Food & Drink"),
    ("pizza", [], "Food & Drink"), ("red heart", ["heart"], "Smileys & Emotion"),
    ("wrapped gift", ["gift"], "Activities"), ("chocolate bar", [], "Food & Drink"),
    ("christmas tree", [], "Activities"), ("birthday cake", ["birthday"], "Food & Drink"),
    ("dog", ["dog2"], "Animals & Nature"), ("dog face", ["dog"], "Animals & Nature"),
    ("cat", ["cat2"], "Animals & Nature"), ("umbrella", ["open umbrella"], "Travel & Places"),
    ("laptop", ["computer"], "Objects"), ("automobile", ["car", "red car"], "Travel & Places"),
    ("t-shirt", ["shirt", "t shirt", "tshirt"], "Objects"),
    ("sunflower", [], "Animals & Nature"), ("rocket", [], "Travel & Places"),
    ("guitar", [], "Activities"), ("new button", ["new"], "Symbols"),
    ("tangerine", ["mandarin", "orange"], "Food & Drink"), ("hot dog", ["hotdog"], "Food & Drink"),
    ("bus", [], "Travel & Places"), ("backpack", ["school satchel"], "Objects"),
    ("headphone", ["headphones"], "Objects"), ("ice cream", [], "Food & Drink"),
    ("balloon", [], "Activities"), ("trophy", [], "Activities"), ("receipt", [], "Objects"),
]


def write_concepts(path: Path, concepts=SMALL_CONCEPTS) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i, (name, aliases, category) in enumerate(concepts):
            f.write(json.dumps({"name": name, "aliases": aliases, "category": category,
                                "char": "", "codepoints": f"{i:x}"}) + "\n")
    return path


def chat_body(content, model: str = "test-model") -> dict:
    return {"id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def prompts_reply(*prompts) -> tuple[int, dict]:
    return 200, chat_body(json.dumps({"prompts": list(prompts)}))


class ScriptedLLM:
    """A real HTTP server speaking just enough of POST /v1/chat/completions.

    `script` is a queue of replies used in order; each is (status, body) or a dict with
    keys status, body (dict -> JSON, str/bytes -> raw), headers, delay (seconds).
    When the queue is empty, `default` (or a callable of the request JSON) answers.
    """

    def __init__(self):
        self.script: "queue.Queue" = queue.Queue()
        self.default = None
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                raw = self.rfile.read(length)
                try:
                    payload = json.loads(raw)
                except ValueError:
                    payload = None
                with outer._lock:
                    outer.requests.append({"path": self.path, "json": payload,
                                           "headers": {k.lower(): v for k, v
                                                       in self.headers.items()}})
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    reply = outer._next(payload)
                    if isinstance(reply, tuple):
                        reply = {"status": reply[0], "body": reply[1]}
                    time.sleep(reply.get("delay", 0))
                    body = reply.get("body", "")
                    data = json.dumps(body).encode() if isinstance(body, (dict, list)) \
                        else body.encode() if isinstance(body, str) else body
                    try:
                        self.send_response(reply.get("status", 200))
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(data)))
                        for k, v in reply.get("headers", {}).items():
                            self.send_header(k, v)
                        self.end_headers()
                        self.wfile.write(data)
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # the client gave up (timeout tests)
                finally:
                    with outer._lock:
                        outer.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    def _next(self, payload):
        try:
            return self.script.get_nowait()
        except queue.Empty:
            pass
        if callable(self.default):
            return self.default(payload)
        if self.default is not None:
            return self.default
        return 500, {"error": {"message": "script exhausted"}}

    def push(self, *replies):
        for r in replies:
            self.script.put(r)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def chat_requests(self) -> list[dict]:
        return [r for r in self.requests if r["path"].endswith("/chat/completions")]
