"""LocalStorage: atomic placement, names it refuses, and the UPLOAD_FSYNC setting."""
import os

import pytest

from gateway.config import from_env
from gateway.storage.base import new_id
from gateway.storage.local import LocalStorage


def _store(storage: LocalStorage, data: bytes) -> str:
    name = new_id() + ".txt"
    temp = storage.create_temp("files", name)
    temp.handle.write(data)
    assert storage.path("files", name).exists() is False  # not visible before commit
    storage.commit(temp)
    return name


@pytest.mark.parametrize("fsync", [False, True])
def test_commit_places_the_file_and_fsyncs_only_when_asked(tmp_path, monkeypatch, fsync):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    storage = LocalStorage(tmp_path, fsync=fsync)
    name = _store(storage, b"hello")
    assert storage.path("files", name).read_bytes() == b"hello"
    assert len(synced) == (1 if fsync else 0)
    # No temp file is left beside it.
    assert [p.name for p in storage.path("files", name).parent.iterdir()] == [name]


def test_names_that_are_not_ours_never_reach_the_disk(tmp_path):
    storage = LocalStorage(tmp_path)
    for name in ("../etc/passwd", "/etc/passwd", "x" * 32, new_id() + "/../a"):
        assert storage.path("files", name) is None
        assert storage.open("files", name) is None


@pytest.mark.parametrize("raw, expected", [("", False), ("on", True), ("1", True), ("TRUE", True),
                                           ("off", False), ("0", False), ("no", False)])
def test_upload_fsync_setting(raw, expected):
    assert from_env({"UPLOAD_FSYNC": raw})["UPLOAD_FSYNC"] is expected


def test_upload_fsync_setting_rejects_nonsense():
    with pytest.raises(SystemExit, match="UPLOAD_FSYNC must be on or off"):
        from_env({"UPLOAD_FSYNC": "sometimes"})
