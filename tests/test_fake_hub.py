"""Checks of the fake Hub (tests/fake_hub.py), driven only through the real ``huggingface_hub`` client."""

import hashlib
import os
from pathlib import Path

import huggingface_hub
import pytest
import torch
from fake_hub import FakeHub, fake_hub_fixture, set_hub_offline  # noqa: F401  (fixture "fake_hub")
from huggingface_hub import (
    CommitOperationAdd,
    HfApi,
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

REPO = "test-user/tiny"
SAFETENSORS = "diffusion_pytorch_model.safetensors"
FILES = {
    "config.json": b'{"hidden": 8}\n',
    "weights/model.bin": os.urandom(3000) + b"\0\xff",
    "weights/deeper/notes.txt": "héllo fake hub\n".encode(),
}


def _git_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


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

    for name, content in FILES.items():
        assert Path(hf_hub_download(REPO, name)).read_bytes() == content
        metadata = get_hf_file_metadata(hf_hub_url(REPO, name))
        assert (metadata.commit_hash, metadata.etag, metadata.size) == (oid, _git_oid(content), len(content))

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

    seen = len(fake_hub.requests)
    loaded = UNet2DModel.from_pretrained(repo_id)
    downloads = [path for method, path in fake_hub.requests[seen:] if method == "GET" and "/resolve/" in path]
    assert sorted(path.rsplit("/", 1)[-1] for path in downloads) == ["config.json", SAFETENSORS], downloads
    assert ("GET", f"/api/models/{repo_id}") in fake_hub.requests[seen:]  # diffusers' module-level model_info
    expected, actual = unet.state_dict(), loaded.state_dict()
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[key], actual[key]) for key in expected)
    assert list(loaded.config.block_out_channels) == [8, 16]
