"""``download`` against a local HTTP server (127.0.0.1) serving small archives in the real
release layouts; the server honours ``Range`` and can cut the first transfer short."""

from __future__ import annotations

import io
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import numpy as np
import pytest
from dataset_files import (
    write_modelnet40,
    write_scanobjectnn,
    write_shapenetpart_h5,
    write_shapenetpart_normals,
)

from pointset.datasets import DatasetError, ModelNet40, ScanObjectNN, ShapeNetPart
from pointset.datasets import download as download_fn
from pointset.datasets.download import RELEASES, verify
from pointset.datasets.shapenetpart import NORMALS_FOLDER


def zip_folder(folder: Path, prefix: str, junk: bool = True) -> bytes:
    """Zip ``folder`` under ``prefix/`` (plus a ``__MACOSX`` entry, as real archives have)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                z.write(path, f"{prefix}/{path.relative_to(folder)}")
        if junk:
            z.writestr(f"__MACOSX/{prefix}/._main_split", b"junk")
    return buf.getvalue()


@pytest.fixture(scope="module")
def scanobjectnn_zip(tmp_path_factory) -> bytes:
    folder = write_scanobjectnn(tmp_path_factory.mktemp("src") / "h5_files", n=4, points=2048)
    return zip_folder(folder, "h5_files")


class Server:
    """A tiny file server: ``payload`` at every path; ``cut`` bytes of the first reply only."""

    def __init__(self) -> None:
        self.payload = b""
        self.cut: int | None = None
        self.honour_range = True
        self.wrong_range = False  # answer every range request with the bytes from 0
        self.requests: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                rng = self.headers.get("Range") if server.honour_range else None
                server.requests.append(self.headers.get("Range"))
                size = len(server.payload)
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                start = 0 if server.wrong_range else start
                if rng and start >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.end_headers()
                    return
                body = server.payload[start:]
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut is not None:
                    body, server.cut = body[: server.cut], None
                    self.close_connection = True
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/archive.zip"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def assert_nothing_half_written(root: Path) -> None:
    assert not (root / "h5_files").exists()
    assert [p.name for p in root.iterdir() if p.name != ".downloads"] == []


def test_download_verify_install_scanobjectnn(tmp_path, server, scanobjectnn_zip):
    server.payload = scanobjectnn_zip
    target = download_fn("scanobjectnn", tmp_path, url=server.url, progress=False)
    assert target == tmp_path / "h5_files"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h5_files"]  # archive and temps gone
    ds = ScanObjectNN(tmp_path, split="test", num_points=128)
    assert len(ds) == 4
    # installed and verified: a second call makes no request
    download_fn("scanobjectnn", tmp_path, url=server.url, progress=False)
    assert server.requests == [None]


def test_interrupted_transfer_resumes(tmp_path, server, scanobjectnn_zip):
    server.payload, server.cut = scanobjectnn_zip, 50_000
    with pytest.raises(
        DatasetError, match=r"stopped after 50000 of \d+ bytes; run again to resume"
    ):
        download_fn("scanobjectnn", tmp_path, url=server.url, progress=False, retries=0)
    part = tmp_path / ".downloads" / "scanobjectnn.zip.part"
    assert part.stat().st_size == 50_000
    assert not (tmp_path / "h5_files").exists()
    download_fn("scanobjectnn", tmp_path, url=server.url, progress=False, retries=0)
    assert server.requests == [None, "bytes=50000-"]
    assert len(ScanObjectNN(tmp_path, num_points=64)) == 4
    assert not part.exists()


def test_retries_resume_within_one_call(tmp_path, server, scanobjectnn_zip):
    server.payload, server.cut = scanobjectnn_zip, 12_345
    download_fn("scanobjectnn", tmp_path, url=server.url, progress=False, retries=1)
    assert server.requests == [None, "bytes=12345-"]


def test_server_ignoring_range_restarts(tmp_path, server, scanobjectnn_zip):
    server.payload, server.honour_range = scanobjectnn_zip, False
    (tmp_path / ".downloads").mkdir()
    (tmp_path / ".downloads" / "scanobjectnn.zip.part").write_bytes(b"stale bytes")
    download_fn("scanobjectnn", tmp_path, url=server.url, progress=False)
    assert (tmp_path / "h5_files" / "main_split").is_dir()


def test_resume_answered_from_another_offset_is_discarded(tmp_path, server, scanobjectnn_zip):
    server.payload, server.wrong_range = scanobjectnn_zip, True
    (tmp_path / ".downloads").mkdir()
    part = tmp_path / ".downloads" / "scanobjectnn.zip.part"
    part.write_bytes(scanobjectnn_zip[:1000])
    with pytest.raises(DatasetError, match="resume from byte 1000 with bytes from 0"):
        download_fn("scanobjectnn", tmp_path, url=server.url, progress=False)
    assert not part.exists() and not (tmp_path / "h5_files").exists()


def test_complete_part_file_is_used(tmp_path, server, scanobjectnn_zip):
    server.payload = scanobjectnn_zip
    (tmp_path / ".downloads").mkdir()
    (tmp_path / ".downloads" / "scanobjectnn.zip.part").write_bytes(scanobjectnn_zip)
    download_fn("scanobjectnn", tmp_path, url=server.url, progress=False)
    assert server.requests == [f"bytes={len(scanobjectnn_zip)}-"]  # answered 416: complete


def test_corrupt_archive_rejected(tmp_path, server, scanobjectnn_zip):
    raw = bytearray(scanobjectnn_zip)
    raw[len(raw) // 2 : len(raw) // 2 + 64] = bytes(64)  # inside a member: CRC mismatch
    server.payload = bytes(raw)
    with pytest.raises(DatasetError, match="is corrupt .*removed, run again"):
        download_fn("scanobjectnn", tmp_path, url=server.url, progress=False)
    assert_nothing_half_written(tmp_path)
    assert not (tmp_path / ".downloads" / "scanobjectnn.zip.part").exists()


def test_not_a_zip_rejected(tmp_path, server):
    server.payload = b"<html>please log in</html>"
    with pytest.raises(DatasetError, match="is corrupt"):
        download_fn("scanobjectnn", tmp_path, url=server.url, progress=False)
    assert_nothing_half_written(tmp_path)


def test_bad_contents_rejected_before_install(tmp_path, server):
    src = write_scanobjectnn(tmp_path / "src", n=2, points=32)
    import h5py

    with h5py.File(src / "main_split/test_objectdataset_augmentedrot_scale75.h5", "r+") as f:
        f["label"][1] = 20
    server.payload = zip_folder(src, "h5_files")
    root = tmp_path / "root"
    with pytest.raises(DatasetError, match=r"label 20 of cloud 1 is out of range \[0, 15\)"):
        download_fn("scanobjectnn", root, url=server.url, progress=False)
    assert_nothing_half_written(root)


def test_archive_of_something_else_rejected(tmp_path, server):
    src = tmp_path / "src"
    src.mkdir()
    (src / "readme.txt").write_text("hello")
    server.payload = zip_folder(src, "other", junk=False)
    root = tmp_path / "root"
    with pytest.raises(DatasetError, match="does not contain main_split/training_"):
        download_fn("scanobjectnn", root, url=server.url, progress=False)
    assert_nothing_half_written(root)


def test_modelnet40(tmp_path, server):
    src = write_modelnet40(tmp_path / "src" / "modelnet40_ply_hdf5_2048", shards=2, n=3, points=64)
    server.payload = zip_folder(src, "modelnet40_ply_hdf5_2048", junk=False)
    root = tmp_path / "root"
    target = download_fn("modelnet40", root, url=server.url, progress=False)
    assert [p.name for p in verify("modelnet40", target)][:2] == [
        "ply_data_test0.h5",
        "ply_data_test1.h5",
    ]
    assert len(ModelNet40(root, "train", num_points=64)) == 6


def test_unreachable_server_and_unknown_name(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again on exit: nothing listens there
    with pytest.raises(DatasetError, match="cannot reach"):
        download_fn("modelnet40", tmp_path, url=f"http://127.0.0.1:{port}/x.zip", progress=False)
    with pytest.raises(ValueError, match="scanobjectnn, scanobjectnn_full, modelnet40"):
        download_fn("shapenet", tmp_path)


def test_release_urls_are_the_public_archives():
    assert RELEASES["modelnet40"].url.endswith("/modelnet40_ply_hdf5_2048.zip")
    assert RELEASES["scanobjectnn"].url.endswith("/h5_files.zip")
    assert RELEASES["scanobjectnn_full"].url.startswith("http://hkust-vgd.ust.hk/")
    assert RELEASES["shapenetpart"].url.endswith(
        "/shapenetcore_partanno_segmentation_benchmark_v0_normal.zip"
    )
    assert RELEASES["shapenetpart_h5"].url.endswith("/shapenet_part_seg_hdf5_data.zip")
    assert np.all([r.num_classes in (15, 40, 50) for r in RELEASES.values()])


def test_shapenetpart_releases(tmp_path, server):
    """Oracle: the small releases written by the test install, verify and load; a bad part
    label in the archive installs nothing."""
    src = write_shapenetpart_normals(tmp_path / "src" / NORMALS_FOLDER)
    server.payload = zip_folder(src, NORMALS_FOLDER, junk=False)
    root = tmp_path / "root"
    target = download_fn("shapenetpart", root, url=server.url, progress=False)
    assert target == root / NORMALS_FOLDER
    assert len(verify("shapenetpart", target)) == 5  # one shape per category present
    assert len(ShapeNetPart(root, "test", num_points=16)) == 2

    h5 = write_shapenetpart_h5(tmp_path / "src" / "hdf5_data")
    server.payload = zip_folder(h5, "hdf5_data", junk=False)
    target = download_fn("shapenetpart_h5", root, url=server.url, progress=False)
    assert [p.name for p in verify("shapenetpart_h5", target)][0] == "ply_data_train0.h5"
    assert ShapeNetPart(target, "val", use_normals=False, num_points=8).format == "h5"

    with h5py.File(h5 / "ply_data_test0.h5", "r+") as f:
        f["pid"][0, 0] = 49
    server.payload = zip_folder(h5, "hdf5_data", junk=False)
    other = tmp_path / "other"
    with pytest.raises(DatasetError, match="part label 49 is not a part of category"):
        download_fn("shapenetpart_h5", other, url=server.url, progress=False)
    assert [p.name for p in other.iterdir() if p.name != ".downloads"] == []
