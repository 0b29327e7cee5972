"""Checks of the fake Hub (tests/fake_hub.py), driven only through the real ``huggingface_hub`` client."""

import hashlib
import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import huggingface_hub
import pytest
import torch
from fake_hub import FakeHub, fake_hub_fixture, set_hub_offline  # noqa: F401  (fixture "fake_hub")
from huggingface_hub import (
    CommitOperationAdd,
    HfApi,
    RepoFile,
    create_commit,
    create_repo,
    delete_file,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    list_repo_files,
    list_repo_tree,
    model_info,
    snapshot_download,
    upload_file,
    upload_folder,
    whoami,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    LocalTokenNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.lfs import UploadInfo, post_lfs_batch_info
from huggingface_hub.utils import build_hf_headers, get_session
from huggingface_hub.utils._runtime import is_xet_available

REPO = "test-user/tiny"
SAFETENSORS = "diffusion_pytorch_model.safetensors"
FILES = {
    "config.json": b'{"hidden": 8}\n',
    "weights/model.bin": os.urandom(3000) + b"\0\xff",
    "weights/deeper/notes.txt": "héllo fake hub\n".encode(),
}


# Files the fake (like the Hub) stores in LFS among FILES: weights by suffix.
LFS_FILES = {"weights/model.bin"}
# A tiny but real PNG header: binary, yet the fake keeps .png files regular (it does not sniff content).
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))


def _git_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def _sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _pointer(content: bytes) -> bytes:
    """The Git LFS pointer file of ``content`` (what git stores for an LFS file)."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{_sha256(content)}\nsize {len(content)}\n".encode()


def _etag(name: str, content: bytes) -> str:
    """The etag the client sees: sha256 for LFS files, git blob id for regular ones."""
    return _sha256(content) if name in LFS_FILES else _git_oid(content)


def _upload_routes(hub: FakeHub, since: int = 0) -> list[str]:
    """The upload-related requests since ``since``, in order, named by route."""
    routes = []
    for method, raw_path in hub.requests[since:]:
        path = urlsplit(raw_path).path
        if method == "POST" and "/preupload/" in path:
            routes.append("preupload")
        elif method == "POST" and path.endswith(".git/info/lfs/objects/batch"):
            routes.append("batch")
        elif method == "PUT" and path.startswith("/_lfs/upload/"):
            routes.append("put")
        elif method == "POST" and path.endswith(".git/info/lfs/objects/verify"):
            routes.append("verify")
        elif method == "POST" and "/commit/" in path:
            routes.append("commit")
    return routes


def _ndjson(*items: dict) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


def _write_folder(root: Path) -> Path:
    for name, content in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return root


def _push(tmp_path: Path, hub: FakeHub, repo_id: str = REPO, private: bool = False) -> str:
    create_repo(repo_id, token=hub.token, private=private)
    folder = _write_folder(tmp_path / f"upload-{repo_id.replace('/', '--')}")
    return upload_folder(repo_id=repo_id, folder_path=folder, token=hub.token).oid


def test_endpoint_is_patched(fake_hub: FakeHub):
    assert huggingface_hub.constants.ENDPOINT == fake_hub.url
    assert os.environ["HF_ENDPOINT"] == fake_hub.url
    assert hf_hub_url(REPO, "a/b.txt").startswith(f"{fake_hub.url}/{REPO}/resolve/main/")
    assert HfApi().endpoint == fake_hub.url


def test_whoami(fake_hub: FakeHub):
    assert whoami(token=fake_hub.token)["name"] == "test-user"
    with pytest.raises(LocalTokenNotFoundError):  # the client refuses to ask without a token: no ambient token
        whoami()
    with pytest.raises(HfHubHTTPError) as bad_token:
        whoami(token="hf_not_a_token")
    assert bad_token.value.response.status_code == 401


def test_create_repo_exist_ok_and_private(fake_hub: FakeHub):
    url = create_repo(REPO, token=fake_hub.token)
    assert url.repo_id == REPO and url.endpoint == fake_hub.url
    with pytest.raises(HfHubHTTPError) as conflict:
        create_repo(REPO, token=fake_hub.token)
    assert conflict.value.response.status_code == 409
    assert create_repo(REPO, token=fake_hub.token, exist_ok=True).repo_id == REPO

    create_repo("test-user/secret", token=fake_hub.token, private=True)
    assert fake_hub.repos["test-user/secret"].private and not fake_hub.repos[REPO].private
    assert model_info("test-user/secret", token=fake_hub.token).private is True
    # A new repo holds the Hub's initial commit with .gitattributes.
    assert list_repo_files(REPO, token=fake_hub.token) == [".gitattributes"]


def test_upload_folder_and_download_roundtrip(fake_hub: FakeHub, tmp_path: Path):
    oid = _push(tmp_path, fake_hub)
    assert len(oid) == 40 and int(oid, 16) >= 0

    info = model_info(REPO)
    assert info.id == REPO and info.sha == oid and info.private is False
    assert {s.rfilename for s in info.siblings} == {".gitattributes", *FILES}
    assert sorted(list_repo_files(REPO)) == sorted([".gitattributes", *FILES])
    top = {(type(entry).__name__, entry.path) for entry in list_repo_tree(REPO)}
    assert top == {("RepoFile", ".gitattributes"), ("RepoFile", "config.json"), ("RepoFolder", "weights")}
    assert fake_hub.repos[REPO].files["weights/model.bin"] == FILES["weights/model.bin"]
    assert fake_hub.repos[REPO].lfs_files == LFS_FILES

    for name, content in FILES.items():
        assert Path(hf_hub_download(REPO, name)).read_bytes() == content
        metadata = get_hf_file_metadata(hf_hub_url(REPO, name))
        assert (metadata.commit_hash, metadata.etag, metadata.size) == (oid, _etag(name, content), len(content))

    snapshot = Path(snapshot_download(REPO))
    assert snapshot.name == oid
    for name, content in FILES.items():
        assert (snapshot / name).read_bytes() == content

    # Re-uploading the same folder is a no-op: preupload reports the remote oids, the client skips the commit.
    again = upload_folder(repo_id=REPO, folder_path=tmp_path / "upload-test-user--tiny", token=fake_hub.token)
    assert again.oid == oid and len(fake_hub.repos[REPO].commits) == 2


def test_commit_delete_and_revisions(fake_hub: FakeHub, tmp_path: Path):
    first = _push(tmp_path, fake_hub)
    second = delete_file("config.json", REPO, token=fake_hub.token).oid
    assert second != first
    assert "config.json" not in list_repo_files(REPO)
    assert Path(hf_hub_download(REPO, "config.json", revision=first)).read_bytes() == FILES["config.json"]
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "config.json")
    with pytest.raises(RevisionNotFoundError):
        model_info(REPO, revision="no-such-branch")

    create_commit(
        REPO,
        operations=[CommitOperationAdd("README.md", b"---\nlicense: mit\n---\n# tiny\n")],
        commit_message="card",
        token=fake_hub.token,
    )
    assert hf_hub_download(REPO, "README.md", cache_dir=tmp_path / "other-cache")


def test_tree_pagination(fake_hub: FakeHub, tmp_path: Path):
    _push(tmp_path, fake_hub)
    fake_hub.tree_page_size = 2
    assert sorted(list_repo_files(REPO)) == sorted([".gitattributes", *FILES])
    assert len([path for method, path in fake_hub.requests if "/tree/" in path]) > 1


def test_writes_need_a_valid_token(fake_hub: FakeHub):
    with pytest.raises(HfHubHTTPError) as anonymous:
        create_repo("test-user/anon", token=False)
    assert anonymous.value.response.status_code == 401
    assert "test-user/anon" not in fake_hub.repos

    create_repo(REPO, token=fake_hub.token)
    for token in (False, "hf_wrong"):
        with pytest.raises(HfHubHTTPError) as denied:
            upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=REPO, token=token)
        assert denied.value.response.status_code == 401
    assert "x.txt" not in fake_hub.repos[REPO].files


def test_rejected_namespace(fake_hub: FakeHub):
    for exist_ok in (False, True):
        with pytest.raises(HfHubHTTPError) as forbidden:
            create_repo("forbidden/model", token=fake_hub.token, exist_ok=exist_ok)
        assert forbidden.value.response.status_code == 403
    assert not fake_hub.repos


def test_unknown_repo_and_file(fake_hub: FakeHub):
    with pytest.raises(RepositoryNotFoundError) as authenticated:
        model_info("test-user/missing", token=fake_hub.token)
    assert authenticated.value.response.status_code == 404
    with pytest.raises(RepositoryNotFoundError) as anonymous:
        model_info("test-user/missing")
    assert anonymous.value.response.status_code == 401
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("test-user/missing", "config.json", token=fake_hub.token)

    create_repo(REPO, token=fake_hub.token)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.txt")


def test_private_repo_needs_token(fake_hub: FakeHub, tmp_path: Path):
    _push(tmp_path, fake_hub, "test-user/secret", private=True)
    with pytest.raises(RepositoryNotFoundError):
        model_info("test-user/secret")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("test-user/secret", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download("test-user/secret")
    path = hf_hub_download("test-user/secret", "config.json", token=fake_hub.token)
    assert Path(path).read_bytes() == FILES["config.json"]
    # An LFS file of a private repo: the Hub redirects to a signed storage URL, which needs no token.
    path = hf_hub_download("test-user/secret", "weights/model.bin", token=fake_hub.token)
    assert Path(path).read_bytes() == FILES["weights/model.bin"]


def test_offline_loading_from_cache(fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    oid = _push(tmp_path, fake_hub)
    online = snapshot_download(REPO)
    seen = len(fake_hub.requests)

    set_hub_offline(monkeypatch)
    assert snapshot_download(REPO) == online and Path(online).name == oid
    assert Path(hf_hub_download(REPO, "weights/model.bin")).read_bytes() == FILES["weights/model.bin"]
    with pytest.raises(LocalEntryNotFoundError):
        hf_hub_download(REPO, "never-downloaded.txt")
    assert len(fake_hub.requests) == seen  # nothing reached the server


@pytest.mark.filterwarnings("ignore:The `local_dir_use_symlinks` argument is deprecated:UserWarning")
def test_diffusers_model_roundtrip(fake_hub: FakeHub, tmp_path: Path):
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        block_out_channels=(8, 16),
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        sample_size=8,
    )
    unet.save_pretrained(tmp_path / "unet")
    repo_id = create_repo("test-user/tiny-unet", token=fake_hub.token).repo_id
    upload_folder(repo_id=repo_id, folder_path=tmp_path / "unet", token=fake_hub.token)

    assert fake_hub.repos[repo_id].lfs_files == {SAFETENSORS}

    seen = len(fake_hub.requests)
    loaded = UNet2DModel.from_pretrained(repo_id)
    requests = fake_hub.requests[seen:]
    resolved = {path.rsplit("/", 1)[-1] for method, path in requests if method == "HEAD" and "/resolve/" in path}
    assert {"config.json", SAFETENSORS} <= resolved, resolved  # (diffusers also probes for a sharded index)
    # config.json comes from /resolve; the weights from the storage URL /resolve redirected to.
    downloads = [path for method, path in requests if method == "GET"]
    sha = _sha256((tmp_path / "unet" / SAFETENSORS).read_bytes())
    assert [path.rsplit("/", 1)[-1] for path in downloads if "/resolve/" in path] == ["config.json"], downloads
    assert [path for path in downloads if path.startswith(f"/_lfs/objects/{sha}?")], downloads
    assert ("GET", f"/api/models/{repo_id}") in fake_hub.requests[seen:]  # diffusers' module-level model_info
    expected, actual = unet.state_dict(), loaded.state_dict()
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[key], actual[key]) for key in expected)
    assert list(loaded.config.block_out_channels) == [8, 16]


def test_safetensors_go_through_git_lfs(fake_hub: FakeHub, tmp_path: Path):
    create_repo(REPO, token=fake_hub.token)
    folder = tmp_path / "pipe"
    (folder / "unet").mkdir(parents=True)
    weights = os.urandom(5000)
    (folder / "unet" / SAFETENSORS).write_bytes(weights)
    (folder / "unet" / "config.json").write_bytes(b'{"sample_size": 8}\n')
    (folder / "samples.png").write_bytes(PNG)
    sha, name = _sha256(weights), f"unet/{SAFETENSORS}"

    seen = len(fake_hub.requests)
    oid = upload_folder(repo_id=REPO, folder_path=folder, token=fake_hub.token).oid
    assert _upload_routes(fake_hub, seen) == ["preupload", "batch", "put", "verify", "commit"]
    puts = [path for method, path in fake_hub.requests[seen:] if method == "PUT"]
    assert len(puts) == 1 and puts[0].startswith(f"/_lfs/upload/{sha}?"), puts
    repo = fake_hub.repos[REPO]
    assert repo.lfs_files == {name}  # committed through an lfsFile line; config.json and the png stay regular
    assert repo.lfs_objects == {sha: weights}
    assert repo.files[name] == weights and repo.files["samples.png"] == PNG

    path = Path(hf_hub_download(REPO, name))
    assert path.read_bytes() == weights
    assert path.resolve().name == sha  # the cache names the blob by its etag: the sha256, as for the Hub's LFS files
    metadata = get_hf_file_metadata(hf_hub_url(REPO, name))
    assert (metadata.commit_hash, metadata.etag, metadata.size) == (oid, sha, len(weights))
    assert metadata.location.startswith(f"{fake_hub.cdn_url}/_lfs/objects/{sha}?")
    snapshot = Path(snapshot_download(REPO, cache_dir=tmp_path / "other-cache"))
    assert (snapshot / name).read_bytes() == weights and (snapshot / "samples.png").read_bytes() == PNG

    # Same folder again: preupload reports the stored sha256, the batch API knows the object: no PUT, no commit.
    seen = len(fake_hub.requests)
    assert upload_folder(repo_id=REPO, folder_path=folder, token=fake_hub.token).oid == oid
    assert _upload_routes(fake_hub, seen) == ["preupload", "batch"]
    assert len(repo.commits) == 2

    # New weights: uploaded and committed again; the old object stays in the repo's LFS storage.
    new_weights = os.urandom(5000)
    (folder / "unet" / SAFETENSORS).write_bytes(new_weights)
    seen = len(fake_hub.requests)
    upload_folder(repo_id=REPO, folder_path=folder, token=fake_hub.token)
    assert _upload_routes(fake_hub, seen) == ["preupload", "batch", "put", "verify", "commit"]
    assert repo.files[name] == new_weights and set(repo.lfs_objects) == {sha, _sha256(new_weights)}
    assert Path(hf_hub_download(REPO, name)).read_bytes() == new_weights
    assert Path(hf_hub_download(REPO, name, revision=oid)).read_bytes() == weights


def test_lfs_rules_size_gitattributes_and_dataset_repos(fake_hub: FakeHub):
    repo_id = "test-user/data"
    create_repo(repo_id, repo_type="dataset", token=fake_hub.token)
    big = b"0123456789abcdef" * (640 * 1024) + b"!"  # 10 MiB + 1 byte of text
    array = b"\x93NUMPY\x01\x00" + bytes(100)  # *.npy is in the .gitattributes of a new repo
    create_commit(
        repo_id,
        repo_type="dataset",
        operations=[
            CommitOperationAdd("big.txt", big),
            CommitOperationAdd("table.npy", array),
            CommitOperationAdd("checkpoints/step-1.ckpt", b"ckpt"),
            CommitOperationAdd("small.txt", b"small\n"),
        ],
        commit_message="data",
        token=fake_hub.token,
    )
    repo = fake_hub.repos[f"datasets/{repo_id}"]
    assert repo.lfs_files == {"big.txt", "table.npy", "checkpoints/step-1.ckpt"}
    assert ("POST", f"/datasets/{repo_id}.git/info/lfs/objects/batch") in fake_hub.requests
    assert Path(hf_hub_download(repo_id, "big.txt", repo_type="dataset")).read_bytes() == big
    assert Path(hf_hub_download(repo_id, "small.txt", repo_type="dataset")).read_bytes() == b"small\n"

    # A regular (inline) file over 10 MiB is refused, as on the Hub: it must go through LFS.
    header = {"key": "header", "value": {"summary": "too big"}}
    line = {"key": "file", "value": {"path": "big2.txt", "content": big.hex(), "encoding": "utf-8"}}
    response = get_session().post(
        f"{fake_hub.url}/api/datasets/{repo_id}/commit/main",
        content=_ndjson(header, line),
        headers={**build_hf_headers(token=fake_hub.token), "Content-Type": "application/x-ndjson"},
    )
    assert response.status_code == 400 and "LFS" in response.headers["X-Error-Message"]


def test_lfs_uploads_and_commits_are_checked(fake_hub: FakeHub):
    create_repo(REPO, token=fake_hub.token)
    content = os.urandom(2048)
    sha, size = _sha256(content), len(content)
    session, headers = get_session(), build_hf_headers(token=fake_hub.token)

    def batch() -> dict:
        actions, errors, transfer = post_lfs_batch_info(
            [UploadInfo.from_bytes(content)],
            token=fake_hub.token,
            repo_type="model",
            repo_id=REPO,
            revision="main",
            transfers=["basic", "multipart", "xet"],
        )
        assert transfer == "basic" and not errors  # "xet" offered by the client, "basic" chosen
        (action,) = actions
        assert (action["oid"], action["size"]) == (sha, size)
        return action

    actions = batch()["actions"]
    upload, verify = actions["upload"], actions["verify"]
    assert upload["href"].startswith(f"{fake_hub.cdn_url}/_lfs/upload/{sha}?") and "header" not in upload  # 1 PUT
    assert verify["href"] == f"{fake_hub.url}/{REPO}.git/info/lfs/objects/verify"

    wrong = bytes([content[0] ^ 1]) + content[1:]
    for body, status in ((wrong, 400), (content[:-1], 400)):
        response = session.put(upload["href"], content=body)
        assert response.status_code == status, response.text
    assert "sha256" in session.put(upload["href"], content=wrong).headers["X-Error-Message"]
    forged = upload["href"].replace("sig=", "sig=0")
    assert session.put(forged, content=content).status_code == 403
    assert session.post(verify["href"], json={"oid": sha, "size": size}, headers=headers).status_code == 404
    assert not fake_hub.repos[REPO].lfs_objects

    # An lfsFile line that names an object never uploaded is refused.
    commit_url = f"{fake_hub.url}/api/models/{REPO}/commit/main"
    commit_headers = {**headers, "Content-Type": "application/x-ndjson"}
    header = {"key": "header", "value": {"summary": "weights"}}
    line = {"key": "lfsFile", "value": {"path": "model.safetensors", "algo": "sha256", "oid": sha, "size": size}}
    response = session.post(commit_url, content=_ndjson(header, line), headers=commit_headers)
    assert response.status_code == 400 and "never uploaded" in response.headers["X-Error-Message"]

    assert session.put(upload["href"], content=content).status_code == 200
    assert session.post(verify["href"], json={"oid": sha, "size": size}, headers=headers).status_code == 200
    assert "actions" not in batch()  # stored now: nothing more to upload
    response = session.post(commit_url, content=_ndjson(header, line), headers=commit_headers)
    assert response.status_code == 200, response.text
    assert fake_hub.repos[REPO].lfs_files == {"model.safetensors"}
    assert Path(hf_hub_download(REPO, "model.safetensors")).read_bytes() == content


def test_files_metadata_reports_sizes_and_lfs(fake_hub: FakeHub, tmp_path: Path):
    _push(tmp_path, fake_hub)
    content = FILES["weights/model.bin"]

    siblings = {sibling.rfilename: sibling for sibling in model_info(REPO, files_metadata=True).siblings}
    for name, file_content in FILES.items():
        assert siblings[name].size == len(file_content)
    lfs = siblings["weights/model.bin"].lfs
    assert (lfs.sha256, lfs.size, lfs.pointer_size) == (_sha256(content), len(content), len(_pointer(content)))
    assert siblings["weights/model.bin"].blob_id == _git_oid(_pointer(content))  # git stores the pointer
    assert siblings["config.json"].lfs is None and siblings["config.json"].blob_id == _git_oid(FILES["config.json"])
    assert all(sibling.size is None for sibling in model_info(REPO).siblings)  # sizes only when asked for

    tree = {entry.path: entry for entry in list_repo_tree(REPO, recursive=True) if isinstance(entry, RepoFile)}
    entry = tree["weights/model.bin"]
    assert (entry.size, entry.blob_id) == (len(content), _git_oid(_pointer(content)))
    assert (entry.lfs.sha256, entry.lfs.size, entry.lfs.pointer_size) == (lfs.sha256, lfs.size, lfs.pointer_size)
    assert tree["config.json"].lfs is None and tree["config.json"].size == len(FILES["config.json"])


def test_xet_is_never_used(fake_hub: FakeHub, tmp_path: Path):
    # huggingface_hub picks Xet on the client side alone (hf_xet installed, HF_HUB_DISABLE_XET unset); the fixture
    # turns it off so that uploads take the Git LFS route.
    assert not is_xet_available()
    _push(tmp_path, fake_hub)
    hf_hub_download(REPO, "weights/model.bin")
    assert "batch" in _upload_routes(fake_hub)
    assert not [path for _, path in fake_hub.requests if "xet" in path.lower()]
    head = get_session().head(hf_hub_url(REPO, "weights/model.bin"), follow_redirects=False)
    assert head.status_code == 302 and not [key for key in head.headers if key.lower().startswith("x-xet")]
    # A client that asked for Xet anyway gets a clear refusal rather than a bare 404.
    response = get_session().get(
        f"{fake_hub.url}/api/models/{REPO}/xet-write-token/main", headers=build_hf_headers(token=fake_hub.token)
    )
    assert response.status_code == 501 and "HF_HUB_DISABLE_XET" in response.headers["X-Error-Message"]
