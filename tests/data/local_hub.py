"""A local stand-in for the Hugging Face hub's file protocol, for tests: HEAD/GET on
/datasets/<owner>/<name>/resolve/<revision>/<file> with the headers huggingface_hub reads.

It serves only 127.0.0.1 on an ephemeral port, from memory; it never touches the network or disk.
"""

import hashlib
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOKEN = "hf_local_hub_test_token"
RESOLVE = re.compile(r"^/datasets/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<filename>.+)$")


@dataclass
class HubRepo:
    files: dict[str, bytes]
    gated: bool = False                                  # 401 without a token, 403 with a wrong one
    drops: dict[str, list[int]] = field(default_factory=dict)  # file -> byte counts after which GETs hang up


@dataclass
class HubRequest:
    method: str
    path: str
    range: str | None
    authorized: bool


class LocalHub:
    """`with LocalHub() as hub: hub.repos["owner/name"] = HubRepo(...)`; `hub.url` is the endpoint."""

    def __init__(self):
        self.repos: dict[str, HubRepo] = {}
        self.requests: list[HubRequest] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub.answer(self, body=False)

            def do_GET(self):
                hub.answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "LocalHub":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def file_requests(self) -> list[HubRequest]:
        """Requests for repository files (huggingface_hub also asks /api/ for its own registries)."""
        return [r for r in self.requests if r.path.startswith("/datasets/")]

    def gets(self) -> list[HubRequest]:
        return [r for r in self.file_requests() if r.method == "GET"]

    # -- the protocol ---------------------------------------------------------------------------------
    def answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        authorization = handler.headers.get("Authorization", "")
        request = HubRequest(handler.command, handler.path, handler.headers.get("Range"),
                             authorized=authorization == f"Bearer {TOKEN}")
        self.requests.append(request)
        match = RESOLVE.match(handler.path.split("?")[0])
        repo = self.repos.get(match["repo"]) if match else None
        if repo is None:
            return self.error(handler, 404, "RepoNotFound", "Repository not found")
        if repo.gated and not request.authorized:
            status = 403 if authorization else 401
            return self.error(handler, status, "GatedRepo",
                              f"Access to dataset {match['repo']} is restricted. You must have access to it and be "
                              "authenticated to access it. Please log in.")
        content = repo.files.get(match["filename"])
        if content is None:
            return self.error(handler, 404, "EntryNotFound", f"{match['filename']} does not exist on main")
        etag = hashlib.sha256(content).hexdigest()
        start = 0
        if request.range:
            start = int(re.fullmatch(r"bytes=(\d+)-", request.range)[1])
        handler.send_response(206 if start else 200)
        handler.send_header("X-Repo-Commit", COMMIT)
        handler.send_header("ETag", f'"{etag}"')
        handler.send_header("Accept-Ranges", "bytes")
        handler.send_header("Content-Length", str(len(content) - start))
        if start:
            handler.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
        handler.end_headers()
        if not body:
            return
        drops = repo.drops.get(match["filename"], [])
        if drops:
            cut = drops.pop(0)
            handler.wfile.write(content[start:start + cut])
            handler.wfile.flush()
            handler.close_connection = True
            handler.connection.shutdown(2)  # hang up mid-file, as a dropped connection does
            return
        handler.wfile.write(content[start:])

    @staticmethod
    def error(handler: BaseHTTPRequestHandler, status: int, code: str, message: str) -> None:
        body = f'{{"error": "{message}"}}'.encode()
        handler.send_response(status)
        handler.send_header("X-Error-Code", code)
        handler.send_header("X-Error-Message", message)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)
