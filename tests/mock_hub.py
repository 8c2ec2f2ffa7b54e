"""A local stand-in for the Hugging Face Hub API: the endpoints a create_repo + commit of small files calls.

Tests have no network, so the push code talks to this server through ``endpoint=``. It
implements exactly what ``huggingface_hub`` (2.x) requests for a push of regular (non-LFS)
files, as read in its source (``hf_api.create_repo``, ``repo_info``, ``_validate_yaml``,
``_commit_api._fetch_upload_modes`` and ``_send_commit``):

* ``POST /api/repos/create``              JSON ``{name, organization, visibility?, type?}``; 409 if it exists
* ``GET  /api/{type}s/{owner}/{name}``    repo info (``id``, ``private``, ``sha``)
* ``POST /api/validate-yaml``             JSON ``{content, repoType}``: the README front matter is parsed
* ``POST /api/{type}s/{owner}/{name}/preupload/{rev}``  every file answered ``uploadMode: regular``
* ``POST /api/{type}s/{owner}/{name}/commit/{rev}``     NDJSON: a header line, then base64 files

Model repos use ``models`` as ``{type}s``. Any other request is recorded in ``unexpected`` and
answered 404, so a test can assert that nothing else was called. ``fail`` makes chosen
endpoints answer an error status; ``token`` (when set) is required as a Bearer token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[dict[str, Any]] = field(default_factory=list)
    sha: str = "0" * 40


@dataclass
class MockHub:
    """Server state: repos, every request seen, and the failures to inject."""

    token: str | None = "hf_mock_token"
    fail: dict[str, int] = field(default_factory=dict)  # endpoint name ("create", "commit", ...) -> HTTP status
    repos: dict[tuple[str, str], Repo] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    unexpected: list[tuple[str, str]] = field(default_factory=list)
    validated: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    _server: ThreadingHTTPServer | None = None

    def start(self) -> MockHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                hub._handle(self, "GET")

            def do_POST(self) -> None:
                hub._handle(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def repo(self, repo_id: str, repo_type: str = "dataset") -> Repo:
        return self.repos[(repo_type, repo_id)]

    # -- request handling ----------------------------------------------------------------------

    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        path = h.path.split("?", 1)[0]
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        self.requests.append((method, path))
        route = self._route(method, path)
        if route is None:
            self.unexpected.append((method, path))
            return _send(h, 404, {"error": f"mock hub: no route for {method} {path}"})
        name, args = route
        if name in self.fail:
            return _send(h, self.fail[name], {"error": f"mock hub: injected failure on {name}"})
        if self.token is not None and h.headers.get("authorization") != f"Bearer {self.token}":
            return _send(h, 401, {"error": "Invalid credentials in Authorization header"})
        status, payload = getattr(self, f"_{name}")(body, *args)
        _send(h, status, payload)

    @staticmethod
    def _route(method: str, path: str) -> tuple[str, tuple[str, ...]] | None:
        parts = path.strip("/").split("/")
        if method == "POST" and path == "/api/repos/create":
            return "create", ()
        if method == "POST" and path == "/api/validate-yaml":
            return "validate", ()
        if len(parts) >= 4 and parts[0] == "api" and parts[1] in ("models", "datasets"):
            repo_type, repo_id = parts[1][:-1], f"{parts[2]}/{parts[3]}"
            if method == "GET" and len(parts) == 4:
                return "info", (repo_type, repo_id)
            if method == "POST" and len(parts) == 6 and parts[4] in ("preupload", "commit"):
                return parts[4], (repo_type, repo_id)
        return None

    def _create(self, body: bytes) -> tuple[int, dict[str, Any]]:
        req = json.loads(body)
        repo_type = req.get("type") or "model"
        repo_id = f"{req['organization']}/{req['name']}"
        prefix = "datasets/" if repo_type == "dataset" else ""
        if (repo_type, repo_id) in self.repos:
            return 409, {"error": "You already created this repo", "url": f"{self.url}/{prefix}{repo_id}"}
        # huggingface_hub sends visibility ("private"/"public"), older versions a boolean "private"
        private = req.get("visibility") == "private" if "visibility" in req else bool(req.get("private"))
        self.repos[(repo_type, repo_id)] = Repo(repo_id, repo_type, private)
        return 200, {"url": f"{self.url}/{prefix}{repo_id}", "name": repo_id}

    def _info(self, body: bytes, repo_type: str, repo_id: str) -> tuple[int, dict[str, Any]]:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            return 404, {"error": "Repository not found"}
        return 200, {"id": repo_id, "private": repo.private, "sha": repo.sha}

    def _validate(self, body: bytes) -> tuple[int, dict[str, Any]]:
        import yaml

        req = json.loads(body)
        self.validated.append(req)
        content = req["content"]
        if content.startswith("---\n"):
            end = content.find("\n---", 4)
            try:
                meta = yaml.safe_load(content[4:end]) if end > 0 else None
            except yaml.YAMLError as e:
                return 400, {"errors": [{"message": f"invalid YAML: {e}"}]}
            if end < 0 or not isinstance(meta, dict):
                return 400, {"errors": [{"message": "the metadata block is not a YAML mapping"}]}
        return 200, {"errors": [], "warnings": []}

    def _preupload(self, body: bytes, repo_type: str, repo_id: str) -> tuple[int, dict[str, Any]]:
        if (repo_type, repo_id) not in self.repos:
            return 404, {"error": "Repository not found"}
        files = json.loads(body)["files"]
        return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                               for f in files]}

    def _commit(self, body: bytes, repo_type: str, repo_id: str) -> tuple[int, dict[str, Any]]:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            return 404, {"error": "Repository not found"}
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header, ops = lines[0], lines[1:]
        if header.get("key") != "header" or any(op.get("key") != "file" for op in ops):
            return 400, {"error": "mock hub: only regular files are supported"}
        added = {}
        for op in ops:
            value = op["value"]
            assert value["encoding"] == "base64"
            added[value["path"]] = base64.b64decode(value["content"])
        repo.files.update(added)
        repo.sha = hashlib.sha1(body).hexdigest()
        repo.commits.append({"summary": header["value"]["summary"], "files": sorted(added)})
        prefix = "datasets/" if repo_type == "dataset" else ""
        return 200, {"commitUrl": f"{self.url}/{prefix}{repo_id}/commit/{repo.sha}", "commitOid": repo.sha,
                     "pullRequestUrl": None}


def _send(h: BaseHTTPRequestHandler, status: int, payload: dict[str, Any]) -> None:
    data = json.dumps(payload).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(data)))
    if status >= 400 and "error" in payload:
        h.send_header("X-Error-Message", payload["error"])
    h.end_headers()
    h.wfile.write(data)
