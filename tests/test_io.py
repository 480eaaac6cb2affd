"""Atomic writes, ark/scp pairs readable by kaldiio, and the output-dir lock."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import kaldiio
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asr_bn.errors import AsrBnError
from asr_bn.io import OutputLock, atomic_open, read_matrix, write_ark_scp, write_text


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as f:
            f.write("new, partial")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_enospc_is_one_line_error_and_old_file_intact(tmp_path: Path) -> None:
    target = tmp_path / "feats.ark"
    write_text(target, "old")
    with pytest.raises(AsrBnError, match="could not write .*feats.ark.*No space left"):
        with atomic_open(target) as f:
            f.write("x")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert target.read_text() == "old"


def test_ark_scp_roundtrip(tmp_path: Path, rng: np.random.Generator) -> None:
    mats = {"utt1": rng.standard_normal((7, 3)).astype(np.float32), "utt2": rng.standard_normal((2, 3)).astype(np.float32)}
    ali = {"utt1": np.arange(7, dtype=np.int32)}
    n = write_ark_scp(tmp_path / "f.ark", tmp_path / "f.scp", mats.items())
    assert n == 2
    back = dict(kaldiio.load_scp_sequential(str(tmp_path / "f.scp")))
    for k in mats:
        np.testing.assert_array_equal(back[k], mats[k])
    write_ark_scp(tmp_path / "a.ark", tmp_path / "a.scp", ali.items())
    np.testing.assert_array_equal(kaldiio.load_scp(str(tmp_path / "a.scp"))["utt1"], ali["utt1"])


def test_matrices_read_through_open_archives_are_the_same(tmp_path: Path, rng: np.random.Generator,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """read_matrix with `files` (one open file per archive, reused across a table's rows, e.g. by tree statistics)
    reads what it reads opening the archive each time; the files stay open for the caller to close, and
    tree_stats.read_features closes them when its table ends."""
    import builtins

    from asr_bn.gmm.tree_stats import read_features
    from asr_bn.io import read_table

    mats = {f"u{i}": rng.normal(size=(5 + i, 3)).astype(np.float32) for i in range(4)}
    write_ark_scp(tmp_path / "a.ark", tmp_path / "a.scp", list(mats.items())[:2])
    write_ark_scp(tmp_path / "b.ark", tmp_path / "b.scp", list(mats.items())[2:])
    (tmp_path / "all.scp").write_text((tmp_path / "a.scp").read_text() + (tmp_path / "b.scp").read_text())
    files: dict = {}
    for utt, row in read_table(tmp_path / "all.scp", "").items():
        np.testing.assert_array_equal(read_matrix(row.rest, "all.scp", utt, files), mats[utt])
        np.testing.assert_array_equal(read_matrix(row.rest, "all.scp", utt), mats[utt])
    assert sorted(Path(p).name for p in files) == ["a.ark", "b.ark"] and not any(f.closed for f in files.values())
    for f in files.values():
        f.close()
    opened = []
    real_open = open

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        opened.append(real_open(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(builtins, "open", spy)
    read = dict(read_features(tmp_path / "all.scp"))
    monkeypatch.undo()
    assert sorted(read) == sorted(mats) and all(np.array_equal(read[u], mats[u]) for u in mats)
    arks = [f for f in opened if str(f.name).endswith(".ark")]
    assert len(arks) == 2 and all(f.closed for f in arks)


def test_lock_refuses_second_run(tmp_path: Path) -> None:
    with OutputLock(tmp_path):
        with pytest.raises(AsrBnError, match="in use by another asr-bn run"):
            with OutputLock(tmp_path):
                pass
    with OutputLock(tmp_path):  # released
        pass


def test_stale_lock_is_taken_over_with_the_killed_runs_temporary_files(tmp_path: Path) -> None:
    """A run killed mid-write leaves its lock and an atomic write's temporary file: the next run removes both,
    and nothing else (nor the temporary files of a live run's directory)."""
    (tmp_path / ".asr-bn.lock").write_text("999999999")
    (tmp_path / ".checkpoint.pt.k2x9ab.tmp").write_bytes(b"half")
    (tmp_path / "checkpoint.pt").write_bytes(b"whole")
    (tmp_path / "notes.tmp").write_bytes(b"a user's file")
    with OutputLock(tmp_path):
        assert sorted(p.name for p in tmp_path.iterdir()) == [".asr-bn.lock", "checkpoint.pt", "notes.tmp"]
    (tmp_path / ".final.pt.x.tmp").write_bytes(b"being written")
    with OutputLock(tmp_path):  # a lock released normally: its directory is left as it is
        assert (tmp_path / ".final.pt.x.tmp").exists()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_feature_archive_reading(tmp_path: Path, data: st.DataObject) -> None:
    """Random byte flips and truncations of a feats.ark (plain or Kaldi-compressed) never give anything but
    AsrBnError (or a matrix)."""
    rng = np.random.default_rng(0)
    ark, scp = tmp_path / "f.ark", tmp_path / "f.scp"
    mats = [("u1", rng.standard_normal((5, 3)).astype(np.float32)), ("u2", np.ones((2, 3), np.float32))]
    write_ark_scp(ark, scp, mats, compression_method=data.draw(st.sampled_from([None, 2])))
    good = ark.read_bytes()
    bad = bytearray(good[: data.draw(st.integers(0, len(good)))])
    for _ in range(data.draw(st.integers(0, 4))):
        if bad:
            bad[data.draw(st.integers(0, len(bad) - 1))] = data.draw(st.integers(0, 255))
    ark.write_bytes(bytes(bad))
    for line in scp.read_text().splitlines():
        key, location = line.split(" ", 1)
        try:
            read_matrix(location, scp, key)
        except AsrBnError as e:
            assert str(scp) in str(e) and key in str(e)


_SCP_TEXT = st.text(st.sampled_from("abu01239:./[],-_ "), max_size=30).filter(lambda s: s.strip() != "-")  # no stdin


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_feature_scp_text(tmp_path: Path, data: st.DataObject) -> None:
    """Random feats.scp lines (good and missing archives, offsets in and past the file, slices, garbage) read the
    way batching does (key, then the rest as the location) give a matrix or an AsrBnError line naming the scp and
    the utterance. `|` stays out: kaldiio runs such a location as a shell command, which Kaldi scp files may do."""
    tmp_path = tmp_path.resolve()  # the scp names the resolved archive path
    ark, scp = tmp_path / "f.ark", tmp_path / "f.scp"
    mats = {"u1": np.zeros((4, 3), np.float32), "u2": np.ones((2, 3), np.float32)}
    write_ark_scp(ark, scp, mats.items())
    good = {loc: mats[key] for key, loc in (line.split() for line in scp.read_text().splitlines())}
    offsets = st.one_of(st.sampled_from([int(loc.rsplit(":", 1)[1]) for loc in good]), st.integers(-2, len(good) * 60))
    location = st.one_of(
        st.builds(lambda off, rng: f"{ark}:{off}{rng}", offsets, st.sampled_from(["", "", "[1:3]", "[9]"])),
        st.builds(lambda rest: f"{ark}{rest}", _SCP_TEXT),
        st.just(f"{tmp_path / 'missing.ark'}:10"),
        st.just(str(tmp_path)),
        _SCP_TEXT,
    )
    keyed = st.builds(lambda key, loc: f"{key} {loc}", st.sampled_from(["u1", "u2", "x"]), location)
    line = st.one_of(keyed, _SCP_TEXT)
    scp.write_text("".join(f"{text}\n" for text in data.draw(st.lists(line, min_size=1, max_size=4))))
    for line in scp.read_text().splitlines():
        fields = line.split(maxsplit=1)
        if len(fields) != 2:
            continue  # batching's table reader rejects these before any archive is opened
        key, loc = fields[0], fields[1].strip()
        try:
            mat = read_matrix(loc, scp, key)
        except AsrBnError as e:
            assert "\n" not in str(e) and str(scp) in str(e) and key in str(e)
        else:
            assert mat.ndim in (1, 2)
            if loc in good:
                np.testing.assert_array_equal(mat, good[loc])


def test_compressed_matrix_is_expanded_as_kaldi_and_a_bad_header_is_one_error(tmp_path: Path) -> None:
    """A Kaldi-compressed matrix comes back within its quantization step (Kaldi's own binary checks the exact bits:
    tests/test_kaldi_formats.py); a header claiming more rows than the file holds is one error, nothing allocated."""
    mat = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    ark, scp = tmp_path / "f.ark", tmp_path / "f.scp"
    write_ark_scp(ark, scp, [("u1", mat)], compression_method=2)
    location = scp.read_text().split()[1]
    np.testing.assert_allclose(read_matrix(location, scp, "u1"), mat, atol=0.05 * np.ptp(mat))
    data = bytearray(ark.read_bytes())
    offset = int(location.rsplit(":", 1)[1])
    data[offset + 13 : offset + 17] = (2**30).to_bytes(4, "little")  # rows, after `\0BCM `, min and range
    ark.write_bytes(bytes(data))
    with pytest.raises(AsrBnError, match=r"u1 at .*compressed 1073741824 x 4 matrix needs \d+ bytes, the file has"):
        read_matrix(location, scp, "u1")


@pytest.mark.parametrize("reader", ["read_matrix", "read_loglikes"])
@pytest.mark.parametrize("raised", [MemoryError(), KeyError("a bug, not bad bytes")])
def test_kaldiio_readers_report_only_what_reading_raises(tmp_path: Path, reader: str, raised: Exception) -> None:
    """io.read_matrix (features) and decode's read_loglikes: a MemoryError is no corrupt archive, and what
    kaldiio does not raise on bad bytes (io.KALDIIO_READ_ERRORS) is a bug that escapes."""
    import kaldiio

    from asr_bn.decode import read_loglikes

    write_ark_scp(tmp_path / "f.ark", tmp_path / "f.scp", [("u1", np.zeros((2, 3), np.float32))])
    location = (tmp_path / "f.scp").read_text().split()[1]
    read = {
        "read_matrix": lambda: read_matrix(location, tmp_path / "f.scp", "u1"),
        "read_loglikes": lambda: list(read_loglikes(tmp_path / "f.ark")),
    }[reader]
    message = {"read_matrix": r"f\.scp: u1 at ", "read_loglikes": r"^ark:\S+f\.ark at its first utterance"}[reader]

    def fail(*args: object, **kwargs: object) -> None:
        raise raised

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kaldiio.matio, "read_kaldi", fail)
        if isinstance(raised, MemoryError):
            with pytest.raises(AsrBnError, match=message + r".*: out of memory reading the matrix") as e:
                read()
            assert "missing, truncated or corrupt" not in str(e.value) and "\n" not in str(e.value)
        else:
            with pytest.raises(KeyError, match="a bug"):
                read()


def test_table_reader_rules(tmp_path: Path) -> None:
    """The one reader of Kaldi text tables: file order, blank lines skipped, field counts, duplicates, bad bytes
    and missing files each one line naming the file (and the line)."""
    from asr_bn.io import TableRow, read_rows, read_table

    path = tmp_path / "text"
    path.write_bytes(b"u2  hello   world \n\n u1\n\r\nu3 x\n")
    rows = read_rows(path, "fix it")
    assert rows == [TableRow(1, "u2", "hello   world"), TableRow(3, "u1", ""), TableRow(5, "u3", "x")]
    assert rows[0].fields == ["hello", "world"] and rows[1].fields == []
    assert list(read_table(path, "fix it", fields=(1, None))) == ["u2", "u1", "u3"]
    with pytest.raises(AsrBnError, match=r"text line 1: expected 2 fields, found 3: 'u2  hello   world' \(fix it\)"):
        read_table(path, "fix it")
    with pytest.raises(AsrBnError, match=r"text line 3: expected at least 2 fields, found 1: 'u1'"):
        read_rows(path, "fix it", fields=(2, None))
    path.write_text("a 1\nb 2\na 3\n")
    assert [r.key for r in read_rows(path, "fix it")] == ["a", "b", "a"]  # rows may repeat keys
    with pytest.raises(AsrBnError, match=r"text: key 'a' appears twice \(lines 1 and 3\); keep one of the two lines"):
        read_table(path, "fix it")
    path.write_bytes(b"a 1\nb \xe9t\xe9\n")
    with pytest.raises(AsrBnError, match=r"text line 2: not valid UTF-8 \(byte 0xe9 at column 3\)"):
        read_rows(path, "fix it")
    with pytest.raises(AsrBnError, match=r"^\S+nope is missing; fix it$"):
        read_rows(tmp_path / "nope", "fix it")
    with pytest.raises(AsrBnError, match=r"^cannot read \S+ \(IsADirectoryError: .*\); fix it$"):
        read_rows(tmp_path, "fix it")
