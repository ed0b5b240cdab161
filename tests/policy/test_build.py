"""Source and binary never drift: the committed policy.wasm is exactly what policy.wat
assembles to, wherever it is built from; the CID genesis pins is that of those bytes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from swarm.policy_wasm import build
from swarm.policy_wasm.host import COMMITTED_MODULE, committed_cid, module_cid
from swarm.protocol.cid import CODEC_RAW, Cid


def test_committed_module_is_the_source_assembled_in_another_folder(tmp_path: Path) -> None:
    copy = tmp_path / "elsewhere" / "policy.wat"
    copy.parent.mkdir()
    shutil.copyfile(build.SOURCE, copy)
    rebuilt = build.build_bytes(copy)
    assert rebuilt == COMMITTED_MODULE.read_bytes(), (
        "policy_wasm/policy.wasm is stale: run `make policy` and commit the result")


def test_build_check_passes_and_build_writes_the_same_bytes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert build.main(["--check"]) == 0
    out = tmp_path / "policy.wasm"
    assert build.main(["--out", str(out)]) == 0
    assert out.read_bytes() == COMMITTED_MODULE.read_bytes()
    assert str(committed_cid()) in capsys.readouterr().out


def test_module_cid_is_cidv1_raw_sha256_and_round_trips() -> None:
    cid = committed_cid()
    assert cid.version == 1 and cid.codec == CODEC_RAW
    assert Cid.parse(str(cid)) == cid
    assert str(cid).startswith("bafkrei")
    assert module_cid(b"other bytes") != cid
