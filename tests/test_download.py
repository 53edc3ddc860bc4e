"""The download command against a loopback HTTP server serving a tiny archive (never the internet)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import tarfile
import threading

import pytest

from src.data.download import DownloadError, fetch, main
from src.data.imagenet import ImageNetR
from tests.test_imagenet import r_tree


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A tiny imagenet-r.tar in the publisher's layout, served from 127.0.0.1."""
    monkeypatch.setenv("no_proxy", "127.0.0.1")  # a proxy configured on the machine must not see it
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    site = tmp_path / "site"
    site.mkdir()
    r_tree(tmp_path / "build", per_class=2)
    archive = site / "imagenet-r.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(tmp_path / "build" / "imagenet-r", arcname="imagenet-r")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield (
        f"http://127.0.0.1:{server.server_address[1]}/imagenet-r.tar",
        hashlib.md5(archive.read_bytes()).hexdigest(),
    )
    server.shutdown()
    server.server_close()


def test_download_verifies_and_unpacks_into_the_expected_folder(served, tmp_path):
    url, md5 = served
    dest = tmp_path / "data"
    assert main(["imagenet-r", "--dest", str(dest), "--url", url, "--md5", md5]) == 0
    data = ImageNetR(dest / "imagenet-r", image_size=16, cache_dir=tmp_path / "cache").load()
    assert sorted(set(data.labels.tolist())) == [1, 2, 3, 999] and len(data.labels) == 8


def test_a_checksum_mismatch_unpacks_nothing_and_deletes_the_archive(served, tmp_path, capsys):
    url, md5 = served
    dest = tmp_path / "data"
    assert main(["imagenet-r", "--dest", str(dest), "--url", url, "--md5", "0" * 32]) == 2
    err = capsys.readouterr().err
    assert f"checksum mismatch for {url}: MD5 {md5}, expected {'0' * 32}" in err
    assert not (dest / "imagenet-r").exists() and not (dest / "imagenet-r.tar").exists()


def test_without_a_published_checksum_it_asks_for_one_first(served, tmp_path):
    url, md5 = served
    with pytest.raises(DownloadError, match=f"no checksum.*--md5 {md5}"):
        fetch("imagenet-v2", tmp_path / "data", url=url)
    assert not (tmp_path / "data" / "imagenetv2-matched-frequency-format-val").exists()
