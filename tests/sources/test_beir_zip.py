"""pipeline.sources.beir_zip: an archive is checked before anything is extracted (absolute paths,
'..', symbolic links), a damaged member is a clear error, and the known checksums apply only to
the official URL."""

from __future__ import annotations

import io
import stat
import zipfile

import pytest

from pipeline.core.common import PipelineError
from pipeline.sources import beir_zip as zips
from tests.sources.test_download import CORPUS, beir_zip, jsonl


def _zip_with(info: zipfile.ZipInfo, content: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("toyset/corpus.jsonl", jsonl(CORPUS))
        zf.writestr(info, content)
    return buf.getvalue()


@pytest.mark.parametrize("make_info,reason", [
    (lambda: zipfile.ZipInfo("/etc/evil"), "absolute path"),
    (lambda: zipfile.ZipInfo("C:/evil"), "absolute path"),
    (lambda: zipfile.ZipInfo("..\\evil"), "'..' in path"),
    (lambda: zipfile.ZipInfo("a/../../evil"), "'..' in path"),
], ids=["absolute", "drive-letter", "backslash-dotdot", "dotdot"])
def test_unsafe_paths_are_rejected(tmp_path, make_info, reason):
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip_with(make_info()))
    target = tmp_path / "x" / "target"
    target.mkdir(parents=True)
    with pytest.raises(PipelineError, match=reason):
        zips.extract_zip(archive, target, "a.zip")
    assert list(target.iterdir()) == []  # checked before anything is written


def test_symlink_entry_is_rejected(tmp_path):
    info = zipfile.ZipInfo("toyset/link")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip_with(info, b"/etc/passwd"))
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(PipelineError, match="symbolic link"):
        zips.extract_zip(archive, target, "a.zip")
    assert list(target.iterdir()) == []


def test_corrupt_member_is_a_clear_error(tmp_path):
    data = bytearray(beir_zip())
    pos = data.index(b"toyset/corpus.jsonl") + len("toyset/corpus.jsonl") + 5
    data[pos] ^= 0xFF  # flips a byte of compressed data: CRC or inflate fails on read
    archive = tmp_path / "a.zip"
    archive.write_bytes(bytes(data))
    with pytest.raises(PipelineError, match="a.zip: (corrupt or truncated zip|cannot read zip)"):
        zips.extract_zip(archive, tmp_path, "a.zip")


def test_known_checksums_apply_only_to_the_official_url(caplog):
    official = zips.BEIR_URL.format(name="scifact")
    assert zips.expected_checksums("scifact", official, None, None)["md5"] == "5f7d1de60b170fc8027bb7898e2efca1"
    assert zips.expected_checksums("scifact", official, "A" * 64, None) == {"sha256": "a" * 64}
    with caplog.at_level("WARNING", logger="pipeline"):
        assert zips.expected_checksums("scifact", "http://mirror.example/scifact.zip", None, None) == {}
    assert "no checksum known" in caplog.text
