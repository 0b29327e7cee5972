"""A small in-process fake of the Hugging Face Hub HTTP API, for tests that must not touch the network.

The server speaks the subset of the Hub API that ``huggingface_hub`` (2.x, the ``httpx2`` based client) uses to
create repos, commit files, read repo metadata, list trees and download files. It stores everything in memory and
answers errors the way the Hub does (JSON ``{"error": ...}`` body plus the ``X-Error-Code`` / ``X-Error-Message``
headers that ``huggingface_hub.utils.hf_raise_for_status`` turns into its typed exceptions).

Uploads take the two routes the Hub offers a client that does not use Xet:

* "regular" files (small text files) go inline, base64, in the commit payload;
* "lfs" files (weights: ``*.safetensors``, ``*.bin``, ``*.pt``, ``*.pth``, ``*.ckpt``, whatever the repo's
  ``.gitattributes`` sends to LFS, and every file over 10 MiB) go through the Git LFS batch API: the client asks
  ``{repo}.git/info/lfs/objects/batch`` for upload actions, PUTs the bytes to a signed URL on a second loopback
  origin that stands in for the storage bucket/CDN, POSTs the verify action, then commits an ``lfsFile`` line that
  names the object by sha256. Downloads of LFS files are redirected (302, with ``X-Linked-Etag``/``X-Linked-Size``)
  to a signed URL on that second origin, so the client drops its ``Authorization`` header there as on the Hub.

Xet is never offered: the LFS batch API always answers the ``basic`` transfer, no answer carries ``X-Xet-*`` headers
and the ``xet-*-token`` endpoints answer 501. Whether ``huggingface_hub`` (2.x) *tries* Xet is decided on the client
alone (``hf_xet`` installed and ``HF_HUB_DISABLE_XET`` unset), so the fixture below sets ``HF_HUB_DISABLE_XET=1``.

Use it through the ``fake_hub`` pytest fixture::

    from fake_hub import fake_hub_fixture  # noqa: F401  (registers the fixture "fake_hub")

    def test_push(fake_hub):
        huggingface_hub.create_repo("test-user/tiny", token=fake_hub.token)
        ...
        assert "config.json" in fake_hub.repos["test-user/tiny"].files
        assert fake_hub.repos["test-user/tiny"].lfs_files == {"model.safetensors"}
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import json
import re
import secrets
import socket
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import pytest

DEFAULT_TOKEN = "hf_test_token"
DEFAULT_USER = "test-user"
DEFAULT_BRANCH = "main"

# URL segment after ``/api/`` -> repo type, and repo type -> prefix of the web/resolve URLs.
_API_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_REPO_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_COMMIT_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

# Files the Hub stores in LFS whatever their .gitattributes say: a regular file may not exceed 10 MiB, and weights
# always go to LFS. (The Hub also sniffs binary content; the fake does not, so e.g. a small .png stays regular.)
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
_LFS_JSON = "application/vnd.git-lfs+json"

# What the Hub puts in the first commit of every new repo.
_INITIAL_GITATTRIBUTES = b"".join(
    f"*.{ext} filter=lfs diff=lfs merge=lfs -text\n".encode()
    for ext in ("bin", "ckpt", "h5", "npy", "npz", "onnx", "pt", "pth", "safetensors", "zip")
)

# Error messages the Hub sends for authentication problems; `hf_raise_for_status` keys on the second one.
_MSG_NO_AUTH = "Invalid username or password."
_MSG_BAD_TOKEN = "Invalid credentials in Authorization header"


def git_blob_oid(content: bytes) -> str:
    """The git blob id of ``content``: what the Hub uses as ETag / oid for regular (non-LFS) files."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def lfs_pointer(content: bytes) -> bytes:
    """The Git LFS pointer file that git stores in place of ``content`` when the file is tracked by LFS."""
    oid = hashlib.sha256(content).hexdigest()
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(content)}\n".encode()


def blob_id(content: bytes, lfs: bool) -> str:
    """The git blob id the Hub reports for a file (``blobId`` / tree ``oid``): of the pointer file for LFS files."""
    return git_blob_oid(lfs_pointer(content) if lfs else content)


def _lfs_patterns(gitattributes: bytes | None) -> list[str]:
    """The patterns of ``.gitattributes`` lines that carry ``filter=lfs``."""
    patterns = []
    for line in (gitattributes or b"").decode("utf-8", "replace").splitlines():
        tokens = line.split()
        if tokens and not tokens[0].startswith("#") and "filter=lfs" in tokens[1:]:
            patterns.append(tokens[0])
    return patterns


def _matches_gitattributes(path: str, pattern: str) -> bool:
    """Approximate git's matching: a pattern without ``/`` matches the file name at any depth, one with ``/`` the
    path from the repo root (``*`` may cross ``/`` here, which makes ``dir/**/*`` work)."""
    if "/" not in pattern.rstrip("/"):
        return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)
    return fnmatch.fnmatchcase(path, pattern.lstrip("/"))


def wants_lfs(path: str, size: int, gitattributes: bytes | None) -> bool:
    """Whether the Hub's preupload would answer ``uploadMode: "lfs"`` for a file of ``size`` bytes at ``path``,
    given the repo's ``.gitattributes`` at the target revision."""
    if size > LFS_SIZE_THRESHOLD or path.lower().endswith(LFS_SUFFIXES):
        return True
    return any(_matches_gitattributes(path, pattern) for pattern in _lfs_patterns(gitattributes))


def _now_iso() -> str:
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


@dataclass
class FakeCommit:
    """One commit: a full snapshot of the repo's files (path -> bytes); ``lfs`` names the paths stored through LFS
    (git holds a pointer file for them, the bytes are the repo's LFS object of that sha256)."""

    oid: str
    parent: str | None
    title: str
    description: str
    date: str
    files: dict[str, bytes]
    lfs: frozenset[str] = frozenset()

    def is_lfs(self, path: str) -> bool:
        return path in self.lfs

    def blob_id(self, path: str) -> str:
        """Git blob id of the file at ``path`` (of its pointer file if it is stored in LFS)."""
        return blob_id(self.files[path], self.is_lfs(path))

    def lfs_info(self, path: str) -> tuple[str, int, int]:
        """``(sha256, size, pointer size)`` of an LFS file."""
        content = self.files[path]
        return hashlib.sha256(content).hexdigest(), len(content), len(lfs_pointer(content))


@dataclass
class FakeRepo:
    """A repo stored by the fake Hub: branches point at commits, each commit holds a complete file snapshot."""

    repo_id: str
    repo_type: str
    private: bool
    owner: str
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, FakeCommit] = field(default_factory=dict)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)  # the repo's LFS storage: sha256 -> bytes

    @property
    def sha(self) -> str:
        """Commit id at the head of ``main``."""
        return self.branches[DEFAULT_BRANCH]

    @property
    def files(self) -> dict[str, bytes]:
        """Files at the head of ``main`` (a copy), LFS files included with their real content."""
        return dict(self.commits[self.sha].files)

    @property
    def lfs_files(self) -> set[str]:
        """Paths of the files at the head of ``main`` that are stored through LFS."""
        return set(self.commits[self.sha].lfs)

    def resolve(self, revision: str) -> FakeCommit | None:
        """A branch name or a full 40-hex commit id -> commit, or ``None``."""
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        return self.commits.get(revision) if _COMMIT_SHA_RE.match(revision) else None

    def add_commit(
        self, branch: str, files: dict[str, bytes], title: str, description: str = "", lfs: Iterable[str] = ()
    ) -> FakeCommit:
        """Record a new commit on ``branch`` with the given full snapshot and move the branch to it. ``lfs``: the
        paths of ``files`` stored through LFS."""
        parent = self.branches.get(branch)
        lfs_paths = frozenset(path for path in lfs if path in files)
        digest = hashlib.sha1()
        for part in (self.repo_type, self.repo_id, parent or "", title, description, str(len(self.commits))):
            digest.update(part.encode() + b"\0")
        for path in sorted(files):
            digest.update(f"{path}\0{blob_id(files[path], path in lfs_paths)}\0".encode())
        commit = FakeCommit(digest.hexdigest(), parent, title, description, _now_iso(), dict(files), lfs_paths)
        self.commits[commit.oid] = commit
        self.branches[branch] = commit.oid
        return commit


class HubError(Exception):
    """An error answer, rendered like the Hub does: JSON body + ``X-Error-Code`` / ``X-Error-Message`` headers."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}
        self.extra = extra or {}


@dataclass
class _Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> _Response:
    return _Response(status, json.dumps(payload).encode(), headers=headers or {})


def _validate_path(path: Any) -> str:
    """Reject paths the Hub would refuse (absolute, empty, ``.``/``..`` segments)."""
    if not isinstance(path, str) or not path or path.startswith("/"):
        raise HubError(400, f"Invalid path: {path!r}")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise HubError(400, f"Invalid path: {path!r}")
    return path


class _Handler(BaseHTTPRequestHandler):
    """Routes one request to the matching ``FakeHub`` endpoint method."""

    protocol_version = "HTTP/1.1"  # keep-alive, like the real Hub; every answer carries a Content-Length
    disable_nagle_algorithm = True  # headers and body go out in two writes: avoid ~40 ms delayed-ACK stalls
    server: _FakeHubHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self) -> None:
        hub = self.server.hub
        body = self._read_body()
        try:
            response = hub.handle(self.command, self.path, dict(self.headers.items()), body, cdn=self.server.cdn)
        except HubError as err:
            response = hub.error_response(err)
        except Exception as err:  # a bug in the fake: surface it to the client instead of hanging up
            response = hub.error_response(HubError(500, f"fake hub internal error: {err!r}"))
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("X-Request-Id", str(uuid.uuid4()))
        for key, value in response.headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)


class _FakeHubHTTPServer(ThreadingHTTPServer):
    """Threaded server on 127.0.0.1:<free port> that remembers open connections so ``stop`` can close them.

    ``cdn``: this server is the stand-in for the LFS storage bucket / CDN (another origin than the Hub API)."""

    daemon_threads = True

    def __init__(self, hub: FakeHub, cdn: bool = False):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hub = hub
        self.cdn = cdn
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        """Hang up kept-alive client connections so their handler threads end with the server."""
        with self._open_lock:
            open_sockets = list(self._open)
        for sock in open_sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class FakeHub:
    """In-memory Hub state plus the HTTP server that exposes it on ``127.0.0.1:<free port>``, and a second server
    (another port, hence another origin) that plays the LFS storage bucket / CDN behind signed URLs.

    Args:
        tokens: valid access tokens, mapped to the user name they authenticate as.
        forbidden_namespaces: namespaces under which ``create_repo`` is refused with 403.
        rejected_repo_ids: individual repo ids whose creation is refused with 403.
        tree_page_size: entries per page of the tree listing (the Hub uses 1000); pages are linked with a
            ``Link: <...>; rel="next"`` header like on the Hub.

    Attributes:
        url: base URL of the server (what ``HF_ENDPOINT`` is set to).
        cdn_url: base URL of the storage/CDN stand-in (``/_lfs/upload/...`` and ``/_lfs/objects/...`` only).
        token: the first valid token (``"hf_test_token"`` by default).
        repos: stored repos, keyed like the Hub's web paths: ``"ns/name"`` for models,
            ``"datasets/ns/name"`` / ``"spaces/ns/name"`` for the other repo types. Each holds its LFS objects in
            ``lfs_objects`` (sha256 -> bytes); ``repo.lfs_files`` names the LFS files at the head of ``main``.
        requests: ``(method, path)`` of every request received by either server, in order.
    """

    def __init__(
        self,
        tokens: dict[str, str] | None = None,
        forbidden_namespaces: set[str] | frozenset[str] = frozenset({"forbidden"}),
        rejected_repo_ids: set[str] | frozenset[str] = frozenset(),
        tree_page_size: int = 1000,
    ):
        self.tokens = dict(tokens) if tokens is not None else {DEFAULT_TOKEN: DEFAULT_USER}
        self.forbidden_namespaces = set(forbidden_namespaces)
        self.rejected_repo_ids = set(rejected_repo_ids)
        self.tree_page_size = tree_page_size
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.RLock()
        self._servers: list[_FakeHubHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self._secret = secrets.token_bytes(32)  # signs the storage URLs handed out, like presigned S3 URLs
        self.url = ""
        self.cdn_url = ""

    @property
    def token(self) -> str:
        """The first configured valid token."""
        return next(iter(self.tokens))

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeHub:
        """Bind two free ports on 127.0.0.1 (the Hub, the storage/CDN) and serve each in a background thread."""
        for cdn in (False, True):
            server = _FakeHubHTTPServer(self, cdn=cdn)
            host, port = server.server_address[:2]
            if cdn:
                self.cdn_url = f"http://{host}:{port}"
            else:
                self.url = f"http://{host}:{port}"
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.02},
                name="fake-hub-cdn" if cdn else "fake-hub",
                daemon=True,
            )
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop serving, drop kept-alive connections and release the ports."""
        for server in self._servers:
            server.shutdown()
            server.close_open_connections()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers = []
        self._threads = []

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def repo_key(repo_type: str, repo_id: str) -> str:
        """Key of a repo in ``repos``: its path on the Hub's website."""
        return f"{_URL_PREFIXES[repo_type]}{repo_id}"

    def repo_url(self, repo: FakeRepo) -> str:
        return f"{self.url}/{self.repo_key(repo.repo_type, repo.repo_id)}"

    def _sign(self, *parts: str) -> str:
        """Signature of a storage URL (what makes an S3 presigned URL unforgeable)."""
        return hmac.new(self._secret, "\0".join(parts).encode(), hashlib.sha256).hexdigest()

    def _check_signature(self, query: dict[str, list[str]], *parts: str) -> None:
        if not hmac.compare_digest(query.get("sig", [""])[0], self._sign(*parts)):
            raise HubError(403, "Signature does not match (not a URL handed out by the fake Hub)")

    def lfs_upload_url(self, repo: FakeRepo, oid: str, size: int) -> str:
        """Signed URL to PUT one LFS object of ``repo`` to (the ``actions.upload.href`` of the batch API)."""
        key = self.repo_key(repo.repo_type, repo.repo_id)
        query = urlencode({"repo": key, "size": size, "sig": self._sign("upload", key, oid, str(size))})
        return f"{self.cdn_url}/_lfs/upload/{oid}?{query}"

    def lfs_download_url(self, repo: FakeRepo, oid: str) -> str:
        """Signed URL of one LFS object of ``repo`` (where ``resolve`` redirects to)."""
        key = self.repo_key(repo.repo_type, repo.repo_id)
        return f"{self.cdn_url}/_lfs/objects/{oid}?{urlencode({'repo': key, 'sig': self._sign('get', key, oid)})}"

    def error_response(self, err: HubError) -> _Response:
        headers = {"X-Error-Message": err.message, **err.headers}
        if err.code is not None:
            headers["X-Error-Code"] = err.code
        return _json({"error": err.message, **err.extra}, status=err.status, headers=headers)

    def _user(self, headers: dict[str, str]) -> str | None:
        """The user behind the ``Authorization: Bearer`` header; ``None`` if absent, 401 if the token is unknown."""
        auth = next((value for key, value in headers.items() if key.lower() == "authorization"), None)
        if not auth:
            return None
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or token.strip() not in self.tokens:
            raise HubError(401, _MSG_BAD_TOKEN)
        return self.tokens[token.strip()]

    def _require_user(self, headers: dict[str, str]) -> str:
        user = self._user(headers)
        if user is None:
            raise HubError(401, _MSG_NO_AUTH)
        return user

    def _visible_repo(self, repo_type: str, repo_id: str, user: str | None) -> FakeRepo:
        """The repo if ``user`` may see it. Like the Hub, a missing or hidden repo is a ``RepoNotFound`` error:
        401 for anonymous callers (the Hub does not tell them whether the repo exists), 404 for authenticated ones.
        """
        repo = self.repos.get(self.repo_key(repo_type, repo_id))
        if repo is None or (repo.private and repo.owner != user):
            raise HubError(401 if user is None else 404, "Repository not found", code="RepoNotFound")
        return repo

    @staticmethod
    def _commit_at(repo: FakeRepo, revision: str) -> FakeCommit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        return commit

    @staticmethod
    def _json_body(body: bytes) -> dict[str, Any]:
        try:
            payload = json.loads(body or b"{}")
        except ValueError as err:
            raise HubError(400, f"Invalid JSON body: {err}") from err
        if not isinstance(payload, dict):
            raise HubError(400, "Expected a JSON object")
        return payload

    # ------------------------------------------------------------------ routing

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes, cdn: bool = False) -> _Response:
        """Route a request. Path segments are matched raw and unquoted one by one, so that ``%2F`` inside a
        revision (``refs%2Fpr%2F1``) or a tree path is not mistaken for a separator. ``cdn``: the request reached
        the storage/CDN origin, which serves the signed LFS URLs only."""
        with self.lock:
            self.requests.append((method, raw_path))
            split = urlsplit(raw_path)
            query = parse_qs(split.query)
            seg = split.path.split("/")[1:]

            if cdn:
                if len(seg) == 3 and seg[:2] == ["_lfs", "upload"] and method == "PUT":
                    return self.lfs_put(unquote(seg[2]), query, body)
                if len(seg) == 3 and seg[:2] == ["_lfs", "objects"] and method in ("GET", "HEAD"):
                    return self.lfs_object(headers, unquote(seg[2]), query)
                raise HubError(404, f"Not Found: {method} {split.path} (on the storage origin)")

            if seg == ["api", "whoami-v2"] and method == "GET":
                return self.whoami(headers)
            if seg == ["api", "repos", "create"] and method == "POST":
                return self.create_repo(headers, body)
            if seg == ["api", "repos", "delete"] and method == "DELETE":
                return self.delete_repo(headers, body)
            if seg == ["api", "validate-yaml"] and method == "POST":
                return self.validate_yaml(headers, body)

            if len(seg) >= 4 and seg[0] == "api" and seg[1] in _API_REPO_TYPES:
                repo_type = _API_REPO_TYPES[seg[1]]
                repo_id = f"{unquote(seg[2])}/{unquote(seg[3])}"
                rest = seg[4:]
                if not rest and method == "GET":
                    return self.repo_info(headers, repo_type, repo_id, DEFAULT_BRANCH, query)
                if len(rest) == 2 and rest[0] == "revision" and method == "GET":
                    return self.repo_info(headers, repo_type, repo_id, unquote(rest[1]), query)
                if len(rest) >= 2 and rest[0] == "tree" and method == "GET":
                    path = unquote("/".join(rest[2:])).strip("/")
                    return self.tree(headers, repo_type, repo_id, unquote(rest[1]), path, split.path, query)
                if len(rest) == 2 and rest[0] == "preupload" and method == "POST":
                    return self.preupload(headers, repo_type, repo_id, unquote(rest[1]), body)
                if len(rest) == 2 and rest[0] == "commit" and method == "POST":
                    return self.commit(headers, repo_type, repo_id, unquote(rest[1]), query, body)
                if rest and rest[0] in ("xet-write-token", "xet-read-token"):
                    raise HubError(
                        501,
                        "The fake Hub does not speak Xet: set HF_HUB_DISABLE_XET=1 (the fake_hub fixture does) so "
                        "that huggingface_hub uploads through Git LFS",
                    )

            repo_type = "model"
            if seg and seg[0] in ("datasets", "spaces"):
                repo_type = _API_REPO_TYPES[seg[0]]
                seg = seg[1:]
            if len(seg) == 6 and seg[1].endswith(".git") and seg[2:5] == ["info", "lfs", "objects"]:
                repo_id = f"{unquote(seg[0])}/{unquote(seg[1])[:-4]}"
                if seg[5] == "batch" and method == "POST":
                    return self.lfs_batch(headers, repo_type, repo_id, body)
                if seg[5] == "verify" and method == "POST":
                    return self.lfs_verify(headers, repo_type, repo_id, body)
            if len(seg) >= 5 and seg[2] == "resolve" and method in ("GET", "HEAD"):
                repo_id = f"{unquote(seg[0])}/{unquote(seg[1])}"
                path = unquote("/".join(seg[4:]))
                return self.resolve(headers, repo_type, repo_id, unquote(seg[3]), path)

            raise HubError(404, f"Not Found: {method} {split.path}")

    # ------------------------------------------------------------------ endpoints

    def whoami(self, headers: dict[str, str]) -> _Response:
        """``GET /api/whoami-v2``: the account behind the token; 401 without (or with an unknown) token."""
        user = self._require_user(headers)
        return _json(
            {
                "type": "user",
                "id": hashlib.sha1(user.encode()).hexdigest()[:24],
                "name": user,
                "fullname": user,
                "email": f"{user}@example.com",
                "emailVerified": True,
                "isPro": False,
                "canPay": False,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "fake-hub", "role": "write"}},
            }
        )

    def create_repo(self, headers: dict[str, str], body: bytes) -> _Response:
        """``POST /api/repos/create`` with ``{"name", "organization", "type", "visibility" | "private"}``.

        Answers ``{"url": ...}``; 409 ``{"error", "url"}`` if the repo exists (``create_repo(exist_ok=True)``
        swallows it); 403 for forbidden namespaces / rejected ids; 401 without a valid token. The new repo gets
        an initial commit holding ``.gitattributes``, as on the Hub.
        """
        user = self._require_user(headers)
        payload = self._json_body(body)
        name = payload.get("name")
        namespace = payload.get("organization") or user
        repo_type = payload.get("type") or "model"
        if repo_type not in _URL_PREFIXES:
            raise HubError(400, f"Invalid repo type: {repo_type!r}")
        if not isinstance(name, str) or not _REPO_NAME_RE.match(name) or ".." in name or "--" in name:
            raise HubError(400, f"Invalid repo name: {name!r}")
        repo_id = f"{namespace}/{name}"
        if namespace in self.forbidden_namespaces or repo_id in self.rejected_repo_ids:
            raise HubError(
                403, f'You don\'t have the rights to create a {repo_type} under the namespace "{namespace}"'
            )
        key = self.repo_key(repo_type, repo_id)
        if key in self.repos:
            url = self.repo_url(self.repos[key])
            raise HubError(409, f"You already created this {repo_type} repo", extra={"url": url})
        visibility = payload.get("visibility")
        private = visibility in ("private", "protected") if visibility is not None else bool(payload.get("private"))
        repo = FakeRepo(repo_id, repo_type, private, owner=user, created_at=_now_iso())
        repo.add_commit(DEFAULT_BRANCH, {".gitattributes": _INITIAL_GITATTRIBUTES}, "initial commit")
        self.repos[key] = repo
        return _json({"url": self.repo_url(repo), "name": repo_id, "id": hashlib.sha1(key.encode()).hexdigest()[:24]})

    def delete_repo(self, headers: dict[str, str], body: bytes) -> _Response:
        """``DELETE /api/repos/delete`` with ``{"name", "organization", "type"}``; 404 ``RepoNotFound`` if missing."""
        user = self._require_user(headers)
        payload = self._json_body(body)
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or user}/{payload.get('name')}"
        repo = self._visible_repo(repo_type, repo_id, user)
        del self.repos[self.repo_key(repo.repo_type, repo.repo_id)]
        return _json({})

    def validate_yaml(self, headers: dict[str, str], body: bytes) -> _Response:
        """``POST /api/validate-yaml``: called by ``create_commit`` when a README.md is committed. The fake does
        not parse YAML (standard library only) and accepts every card."""
        self._user(headers)
        self._json_body(body)
        return _json({"errors": [], "warnings": []})

    def repo_info(
        self, headers: dict[str, str], repo_type: str, repo_id: str, revision: str, query: dict[str, list[str]]
    ) -> _Response:
        """``GET /api/{type}s/{repo}`` and ``/api/{type}s/{repo}/revision/{rev}`` (``model_info``, ``repo_info``).

        Returns ``id``, ``sha`` (commit of the revision), ``private``, ``siblings`` (``[{"rfilename"}]``, plus
        ``size`` and ``blobId`` when ``?blobs=true``, i.e. ``files_metadata=True``, and for LFS files ``lfs:
        {"sha256", "size", "pointerSize"}`` with ``blobId`` the id of the pointer file), dates and zeroed
        counters. ``expand`` is ignored.
        """
        repo = self._visible_repo(repo_type, repo_id, self._user(headers))
        commit = self._commit_at(repo, revision)
        blobs = query.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = []
        for path in sorted(commit.files):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=len(commit.files[path]), blobId=commit.blob_id(path))
                if commit.is_lfs(path):
                    sha256, size, pointer_size = commit.lfs_info(path)
                    sibling["lfs"] = {"sha256": sha256, "size": size, "pointerSize": pointer_size}
            siblings.append(sibling)
        info = {
            "_id": hashlib.sha1(self.repo_key(repo_type, repo_id).encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.oid,
            "createdAt": repo.created_at,
            "lastModified": commit.date,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(len(content) for content in commit.files.values()),
        }
        if repo_type == "model":
            info["modelId"] = repo.repo_id
        return _json(info)

    def tree(
        self,
        headers: dict[str, str],
        repo_type: str,
        repo_id: str,
        revision: str,
        path: str,
        url_path: str,
        query: dict[str, list[str]],
    ) -> _Response:
        """``GET /api/{type}s/{repo}/tree/{rev}[/{path}]?recursive=&cursor=`` (``list_repo_tree``/``_files``).

        Entries are ``{"type": "file", "path", "size", "oid"}`` (LFS files add ``lfs: {"oid": sha256, "size",
        "pointerSize"}``, their ``oid`` being the pointer file's blob id) and ``{"type": "directory", "path", "oid",
        "size": 0}``; without ``recursive`` only the direct children of ``path`` are listed. Pages of
        ``tree_page_size`` entries are chained with a ``Link: <...>; rel="next"`` header. An unknown folder is a
        404 ``EntryNotFound``. ``expand`` (last commit, security status) is ignored.
        """
        repo = self._visible_repo(repo_type, repo_id, self._user(headers))
        commit = self._commit_at(repo, revision)
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = f"{path}/" if path else ""
        files = {p: c for p, c in commit.files.items() if p.startswith(prefix)}
        if path and not files:
            raise HubError(404, f"Entry not found: {path}", code="EntryNotFound")

        entries: dict[str, dict[str, Any]] = {}
        for file_path, content in files.items():
            parts = file_path[len(prefix) :].split("/")
            depth = len(parts) if recursive else 1
            for i in range(1, min(depth, len(parts) - 1) + 1):
                folder = prefix + "/".join(parts[:i])
                if folder not in entries:
                    folder_files = sorted((p, commit.blob_id(p)) for p in commit.files if p.startswith(folder + "/"))
                    oid = hashlib.sha1(json.dumps(folder_files).encode()).hexdigest()
                    entries[folder] = {"type": "directory", "oid": oid, "size": 0, "path": folder}
            if recursive or len(parts) == 1:
                entry: dict[str, Any] = {
                    "type": "file",
                    "oid": commit.blob_id(file_path),
                    "size": len(content),
                    "path": file_path,
                }
                if commit.is_lfs(file_path):
                    sha256, size, pointer_size = commit.lfs_info(file_path)
                    entry["lfs"] = {"oid": sha256, "size": size, "pointerSize": pointer_size}
                entries[file_path] = entry
        listing = [entries[key] for key in sorted(entries)]

        start = int(query.get("cursor", ["0"])[0] or 0)
        end = start + self.tree_page_size
        response_headers = {}
        if end < len(listing):
            params = [(key, value) for key, values in query.items() if key != "cursor" for value in values]
            next_url = f"{self.url}{url_path}?{urlencode([*params, ('cursor', str(end))])}"
            response_headers["Link"] = f'<{next_url}>; rel="next"'
        return _json(listing[start:end], headers=response_headers)

    def preupload(
        self, headers: dict[str, str], repo_type: str, repo_id: str, revision: str, body: bytes
    ) -> _Response:
        """``POST /api/{type}s/{repo}/preupload/{rev}`` with ``{"files": [{"path", "sample", "size"}]}``.

        ``uploadMode`` is ``"lfs"`` for the files the Hub stores in LFS (see ``wants_lfs``: weights suffixes, the
        ``filter=lfs`` patterns of the revision's ``.gitattributes``, anything over 10 MiB) and ``"regular"``
        otherwise; ``shouldIgnore`` is always false. ``oid`` describes the file currently at that path (``None``
        if absent) the way the client computes it locally, so that it can skip unchanged files: the sha256 of an
        LFS file, the git blob id of a regular one.
        """
        user = self._require_user(headers)
        repo = self._visible_repo(repo_type, repo_id, user)
        commit = self._commit_at(repo, revision)
        files = self._json_body(body).get("files")
        if not isinstance(files, list):
            raise HubError(400, '"files" must be a list')
        gitattributes = commit.files.get(".gitattributes")
        answer = []
        for entry in files:
            path = _validate_path(entry.get("path") if isinstance(entry, dict) else None)
            size = entry.get("size", 0)
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise HubError(400, f"Invalid size for {path}: {size!r}")
            existing = commit.files.get(path)
            if existing is None:
                oid = None
            elif commit.is_lfs(path):
                oid = hashlib.sha256(existing).hexdigest()
            else:
                oid = git_blob_oid(existing)
            answer.append(
                {
                    "path": path,
                    "uploadMode": "lfs" if wants_lfs(path, size, gitattributes) else "regular",
                    "shouldIgnore": False,
                    "oid": oid,
                }
            )
        return _json({"files": answer, "commitOid": commit.oid})

    def commit(
        self,
        headers: dict[str, str],
        repo_type: str,
        repo_id: str,
        revision: str,
        query: dict[str, list[str]],
        body: bytes,
    ) -> _Response:
        """``POST /api/{type}s/{repo}/commit/{branch}``, ndjson body: one ``header`` line (``summary``,
        ``description``, optional ``parentCommit``) then ``file`` (base64 ``content``), ``lfsFile`` (``path``,
        ``algo: "sha256"``, ``oid``, optional ``size``), ``deletedFile`` and ``deletedFolder`` lines.

        Creates a new commit (40-hex id) on the branch and answers ``{"success", "commitOid", "commitUrl",
        "hookOutput", "pullRequestUrl"}``. An ``lfsFile`` line makes the file the repo's LFS object of that sha256:
        400 if it was never uploaded (through the LFS batch API) or its size differs. A ``file`` line over 10 MiB
        is refused with 400, as the Hub refuses large regular files. ``create_pr`` is refused with 400; a stale
        ``parentCommit`` gets 412; deleting a missing path is a 404 ``EntryNotFound``.
        """
        user = self._require_user(headers)
        repo = self._visible_repo(repo_type, repo_id, user)
        if query.get("create_pr", ["0"])[0] not in ("0", "false", ""):
            raise HubError(400, "Pull requests are not supported by the fake Hub")
        if revision not in repo.branches:
            raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        head = repo.commits[repo.branches[revision]]
        try:
            items = [json.loads(line) for line in body.splitlines() if line.strip()]
        except ValueError as err:
            raise HubError(400, f"Invalid ndjson body: {err}") from err
        if not items or not isinstance(items[0], dict) or items[0].get("key") != "header":
            raise HubError(400, "The first line of the commit payload must be the header")
        header = items[0].get("value") or {}
        summary = header.get("summary")
        if not isinstance(summary, str) or not summary:
            raise HubError(400, "Commit summary is required")
        parent = header.get("parentCommit")
        if parent is not None and not head.oid.startswith(parent):
            raise HubError(412, "A commit has happened since. Please refresh and try again.")

        files = dict(head.files)
        lfs = set(head.lfs)
        for item in items[1:]:
            key, value = item.get("key"), item.get("value") or {}
            path = _validate_path(value.get("path", "").rstrip("/") if key == "deletedFolder" else value.get("path"))
            if key == "file":
                content = value.get("content", "")
                if value.get("encoding") == "base64":
                    try:
                        files[path] = base64.b64decode(content, validate=True)
                    except ValueError as err:
                        raise HubError(400, f"Invalid base64 content for {path}") from err
                else:
                    files[path] = content.encode()
                if len(files[path]) > LFS_SIZE_THRESHOLD:
                    raise HubError(
                        400, f"Your push was rejected because {path} is larger than 10 MiB: it must go through LFS"
                    )
                lfs.discard(path)
            elif key == "lfsFile":
                if value.get("algo", "sha256") != "sha256":
                    raise HubError(400, f"Unsupported LFS hash algorithm for {path}: {value.get('algo')!r}")
                oid = value.get("oid")
                stored = repo.lfs_objects.get(oid) if isinstance(oid, str) else None
                if stored is None:
                    raise HubError(400, f"LFS object {oid} of {path} was never uploaded to this repo")
                size = value.get("size")
                if size is not None and size != len(stored):
                    raise HubError(400, f"LFS object {oid} of {path} has size {len(stored)}, not {size}")
                files[path] = stored
                lfs.add(path)
            elif key == "deletedFile":
                if path not in files:
                    raise HubError(404, f"A file with this name doesn't exist: {path}", code="EntryNotFound")
                del files[path]
                lfs.discard(path)
            elif key == "deletedFolder":
                doomed = [p for p in files if p.startswith(path + "/")]
                if not doomed:
                    raise HubError(404, f"A folder with this name doesn't exist: {path}", code="EntryNotFound")
                for doomed_path in doomed:
                    del files[doomed_path]
                    lfs.discard(doomed_path)
            else:
                raise HubError(400, f"Unknown commit operation: {key!r}")

        commit = repo.add_commit(revision, files, summary, header.get("description") or "", lfs=lfs)
        return _json(
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self.repo_url(repo)}/commit/{commit.oid}",
                "hookOutput": "",
                "pullRequestUrl": None,
            }
        )

    def resolve(self, headers: dict[str, str], repo_type: str, repo_id: str, revision: str, path: str) -> _Response:
        """``HEAD``/``GET /[{type}s/]{repo}/resolve/{rev}/{path}``.

        A regular file: its exact bytes, with what ``hf_hub_download`` needs: ``X-Repo-Commit`` (commit of the
        revision), ``ETag`` (quoted git blob id, as the Hub does for regular files) and ``Content-Length``; a single
        ``Range: bytes=`` request is honoured (206). An LFS file: like the Hub, a 302 to a signed URL on the
        storage origin (``cdn_url``), with ``X-Repo-Commit``, ``X-Linked-Etag`` (the quoted sha256, which the
        client takes as the file's etag), ``X-Linked-Size`` and ``ETag`` (the pointer file's blob id). A missing
        file is a 404 ``EntryNotFound`` that still carries ``X-Repo-Commit`` (the client uses it to cache the
        non-existence).
        """
        repo = self._visible_repo(repo_type, repo_id, self._user(headers))
        commit = self._commit_at(repo, revision)
        content = commit.files.get(path)
        if content is None:
            raise HubError(404, "Entry not found", code="EntryNotFound", headers={"X-Repo-Commit": commit.oid})
        if commit.is_lfs(path):
            sha256, size, _ = commit.lfs_info(path)
            response_headers = {
                "X-Repo-Commit": commit.oid,
                "ETag": f'"{commit.blob_id(path)}"',
                "X-Linked-Etag": f'"{sha256}"',
                "X-Linked-Size": str(size),
                "Location": self.lfs_download_url(repo, sha256),
            }
            return _Response(302, b"", content_type="text/plain; charset=utf-8", headers=response_headers)
        name = path.rsplit("/", 1)[-1]
        response_headers = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{git_blob_oid(content)}"',
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(name)}; filename=\"{quote(name)}\"",
        }
        return _ranged(content, headers, response_headers)

    # ------------------------------------------------------------------ Git LFS

    def lfs_batch(self, headers: dict[str, str], repo_type: str, repo_id: str, body: bytes) -> _Response:
        """``POST /[{type}s/]{repo}.git/info/lfs/objects/batch`` (``huggingface_hub.lfs.post_lfs_batch_info``), the
        Git LFS batch API, with ``{"operation": "upload", "transfers", "objects": [{"oid", "size"}], "hash_algo",
        "ref": {"name"}}``.

        Answers ``{"transfer": "basic", "objects": [...]}`` (``application/vnd.git-lfs+json``): an object the repo
        already stores comes back bare (no ``actions``: the client skips it); any other gets ``actions.upload``
        (a signed URL on the storage origin, no ``header``: a single PUT, never multipart) and ``actions.verify``
        (``{repo}.git/info/lfs/objects/verify`` on the Hub). "basic" is chosen even when "xet" is offered. A
        malformed object gets a per-object ``error`` (422). Only ``upload`` is supported (400 otherwise); a
        request without "basic" in ``transfers`` is refused with 422, another ``hash_algo`` than sha256 with 409.
        """
        user = self._require_user(headers)
        repo = self._visible_repo(repo_type, repo_id, user)
        payload = self._json_body(body)
        if payload.get("operation") != "upload":
            raise HubError(400, f"Unsupported LFS operation: {payload.get('operation')!r} (the fake serves uploads)")
        transfers = payload.get("transfers") or ["basic"]
        if not isinstance(transfers, list) or "basic" not in transfers:
            raise HubError(422, f"No supported transfer adapter in {transfers!r}: the fake Hub speaks basic only")
        if payload.get("hash_algo", "sha256") != "sha256":
            raise HubError(409, f"Unsupported hash algorithm: {payload.get('hash_algo')!r}")
        ref = payload.get("ref")
        if isinstance(ref, dict) and ref.get("name") is not None:
            self._commit_at(repo, str(ref["name"]).removeprefix("refs/heads/"))
        objects = payload.get("objects")
        if not isinstance(objects, list):
            raise HubError(400, '"objects" must be a list')

        answer = []
        verify_url = f"{self.repo_url(repo)}.git/info/lfs/objects/verify"
        for obj in objects:
            oid = obj.get("oid") if isinstance(obj, dict) else None
            size = obj.get("size") if isinstance(obj, dict) else None
            described = {"oid": oid if isinstance(oid, str) else "", "size": size if isinstance(size, int) else 0}
            stored = repo.lfs_objects.get(oid) if isinstance(oid, str) else None
            if not isinstance(oid, str) or not _SHA256_RE.match(oid):
                answer.append({**described, "error": {"code": 422, "message": f"Invalid oid: {oid!r}"}})
            elif not isinstance(size, int) or isinstance(size, bool) or size < 0:
                answer.append({**described, "error": {"code": 422, "message": f"Invalid size: {size!r}"}})
            elif stored is not None and len(stored) != size:
                message = f"Object {oid} is stored with size {len(stored)}, not {size}"
                answer.append({**described, "error": {"code": 422, "message": message}})
            elif stored is not None:
                answer.append({"oid": oid, "size": size})
            else:
                actions = {
                    "upload": {"href": self.lfs_upload_url(repo, oid, size), "expires_in": 3600},
                    "verify": {"href": verify_url, "expires_in": 3600},
                }
                answer.append({"oid": oid, "size": size, "authenticated": True, "actions": actions})
        body_out = json.dumps({"transfer": "basic", "objects": answer, "hash_algo": "sha256"}).encode()
        return _Response(200, body_out, content_type=_LFS_JSON)

    def lfs_put(self, oid: str, query: dict[str, list[str]], body: bytes) -> _Response:
        """``PUT {cdn_url}/_lfs/upload/{oid}?repo=&size=&sig=``: the ``actions.upload.href`` of the batch API (on the
        Hub, a presigned storage URL: no ``Authorization``). Stores the bytes as the repo's LFS object after checking
        them: 400 if their size or sha256 is not the announced one, 403 on a bad signature, 404 if the repo is gone.
        """
        key, size = query.get("repo", [""])[0], query.get("size", [""])[0]
        self._check_signature(query, "upload", key, oid, size)
        repo = self.repos.get(key)
        if repo is None:
            raise HubError(404, "Repository not found", code="RepoNotFound")
        if len(body) != int(size):
            raise HubError(400, f"Upload of {oid}: got {len(body)} bytes, expected {size}")
        actual = hashlib.sha256(body).hexdigest()
        if actual != oid:
            raise HubError(400, f"Upload of {oid}: the content's sha256 is {actual}")
        repo.lfs_objects[oid] = body
        return _Response(200, b"", content_type="text/plain", headers={"ETag": f'"{hashlib.md5(body).hexdigest()}"'})

    def lfs_verify(self, headers: dict[str, str], repo_type: str, repo_id: str, body: bytes) -> _Response:
        """``POST /[{type}s/]{repo}.git/info/lfs/objects/verify`` with ``{"oid", "size"}`` (the ``actions.verify``
        of the batch API): 200 if the repo stores that object with that size, 404 otherwise."""
        repo = self._visible_repo(repo_type, repo_id, self._require_user(headers))
        payload = self._json_body(body)
        oid, size = payload.get("oid"), payload.get("size")
        stored = repo.lfs_objects.get(oid) if isinstance(oid, str) else None
        if stored is None or len(stored) != size:
            raise HubError(404, f"Object {oid} of size {size} not found")
        return _json({"success": True})

    def lfs_object(self, headers: dict[str, str], oid: str, query: dict[str, list[str]]) -> _Response:
        """``HEAD``/``GET {cdn_url}/_lfs/objects/{oid}?repo=&sig=``: the signed URL ``resolve`` redirects LFS files
        to. Serves the bytes (``Range`` honoured, 206) without looking at ``Authorization``; 403 on a bad
        signature, 404 if the object is gone."""
        key = query.get("repo", [""])[0]
        self._check_signature(query, "get", key, oid)
        repo = self.repos.get(key)
        content = repo.lfs_objects.get(oid) if repo is not None else None
        if content is None:
            raise HubError(404, f"Object {oid} not found")
        return _ranged(content, headers, {"ETag": f'"{hashlib.md5(content).hexdigest()}"'})


def _ranged(content: bytes, request_headers: dict[str, str], response_headers: dict[str, str]) -> _Response:
    """``content`` as an ``application/octet-stream`` answer, honouring a single ``Range: bytes=`` request (206)."""
    response_headers = {**response_headers, "Accept-Ranges": "bytes"}
    range_header = next((v for k, v in request_headers.items() if k.lower() == "range"), None)
    status = 200
    if range_header:
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", range_header.strip())
        if match is None or match.groups() == ("", ""):
            raise HubError(400, f"Unsupported Range header: {range_header}")
        first, last = match.groups()
        size = len(content)
        start, stop = (size - int(last), size - 1) if not first else (int(first), int(last or size - 1))
        start, stop = max(start, 0), min(stop, size - 1)
        if start > stop:
            raise HubError(416, "Range Not Satisfiable", headers={"Content-Range": f"bytes */{size}"})
        response_headers["Content-Range"] = f"bytes {start}-{stop}/{size}"
        content, status = content[start : stop + 1], 206
    return _Response(status, content, content_type="application/octet-stream", headers=response_headers)


# ---------------------------------------------------------------------- pytest glue


def _patch_loaded_diffusers(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """diffusers copies ``HF_ENDPOINT`` into ``HUGGINGFACE_CO_RESOLVE_ENDPOINT`` at import (used in its error
    messages only; all its downloads go through huggingface_hub). Keep those copies consistent too."""
    import sys

    for name in (
        "diffusers.utils.constants",
        "diffusers.utils",
        "diffusers.utils.hub_utils",
        "diffusers.configuration_utils",
        "diffusers.modular_pipelines.mellon_node_utils",
    ):
        module = sys.modules.get(name)
        if module is not None and hasattr(module, "HUGGINGFACE_CO_RESOLVE_ENDPOINT"):
            monkeypatch.setattr(module, "HUGGINGFACE_CO_RESOLVE_ENDPOINT", url)


def point_huggingface_hub_at(monkeypatch: pytest.MonkeyPatch, url: str, home: Path) -> None:
    """Make the already-imported ``huggingface_hub`` talk to ``url`` and keep its cache/token files under ``home``.

    huggingface_hub reads its environment once, at import, into ``huggingface_hub.constants``; and the module-level
    functions (``create_repo``, ``upload_folder``, ``model_info``, ...) are bound methods of ``hf_api.api``, an
    ``HfApi`` whose ``endpoint`` was copied from ``constants.ENDPOINT`` at import. So both the environment (for
    subprocesses and late imports) and these copies are patched.
    """
    import huggingface_hub.hf_api
    from huggingface_hub import constants

    cache = home / "hub"
    env = {
        "HF_ENDPOINT": url,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_XET": "1",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in (
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_TOKEN_PATH",
        "HF_OIDC_RESOURCE",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HUGGINGFACE_CO_STAGING",
        "HUGGINGFACE_HUB_CACHE",
    ):
        monkeypatch.delenv(key, raising=False)

    required = {
        "ENDPOINT": url,
        "HUGGINGFACE_CO_URL_TEMPLATE": url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(cache),
        "HUGGINGFACE_HUB_CACHE": str(cache),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_XET": True,
    }
    optional = {
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HUGGINGFACE_ASSETS_CACHE": str(home / "assets"),
        "HF_XET_CACHE": str(home / "xet"),
        "AGENT_HARNESSES_PATH": str(home / ".agent_harnesses.json"),
        "CHECK_FOR_UPDATE_DONE_PATH": str(home / ".check_for_update_done"),
        "CHECK_FOR_SKILL_UPDATE_DONE_PATH": str(home / ".check_for_skill_update_done"),
        "HF_URL_HOSTS": frozenset(getattr(constants, "HF_URL_HOSTS", frozenset())) | {urlsplit(url).hostname},
    }
    for name, value in required.items():
        monkeypatch.setattr(constants, name, value)
    for name, value in optional.items():
        if hasattr(constants, name):
            monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", url)
    _patch_loaded_diffusers(monkeypatch, url)


def set_hub_offline(monkeypatch: pytest.MonkeyPatch, offline: bool = True) -> None:
    """Switch huggingface_hub's offline mode (``HF_HUB_OFFLINE``) on or off for the rest of the test."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)


@pytest.fixture(name="fake_hub")
def fake_hub_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A running ``FakeHub`` that the in-process ``huggingface_hub`` (and diffusers) talk to.

    Yields the ``FakeHub`` (``.url``, ``.token`` = ``"hf_test_token"`` for user ``"test-user"``, ``.repos``,
    ``.requests``). ``HF_ENDPOINT`` and the client's cached copies of it point at the server, ``HF_HOME`` /
    ``HF_HUB_CACHE`` at a fresh temporary folder, no ambient token is used, telemetry and Xet are off.
    """
    from huggingface_hub.utils import close_session

    hub = FakeHub().start()
    try:
        point_huggingface_hub_at(monkeypatch, hub.url, tmp_path / "fake_hub_home")
        close_session()  # drop pooled connections made before the patch
        yield hub
    finally:
        hub.stop()
        close_session()  # pooled keep-alive connections point at a server that is gone


# The fixture is registered under its marker name, "fake_hub", whatever name it is imported as. Both spellings work:
#     from fake_hub import fake_hub  # noqa: F401          (ruff then flags each `def test_x(fake_hub)` with F811)
#     from fake_hub import fake_hub_fixture  # noqa: F401  (no shadowing, ruff-clean)
fake_hub = fake_hub_fixture
