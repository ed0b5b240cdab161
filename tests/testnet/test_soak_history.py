"""The soak's files: a saved run reads back as it was written, and `soak --check` judges
it as the run did.

Goal: the checker's input survives the disk exactly (same `Run`, same verdict), a
malformed file is named with its line, the recorder writes each operation once (also
one given up while in flight), and `swarm-testnet soak --check RUN_DIR` prints the
verdict and says whether it equals the run's. Method: made-up runs (soak_kit.py)
written with the module's own writers into a temporary folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from soak_kit import a_clean_story

from swarm.testnet import soak
from swarm.testnet.soak_check import check
from swarm.testnet.soak_history import (
    Fault,
    HistoryError,
    Recorder,
    Run,
    RunFiles,
    load,
    read_history,
    write_final,
    write_history,
    write_run,
)

BIN = Path(sys.executable).parent


def save(run: Run, folder: Path) -> RunFiles:
    files = RunFiles(folder / "soak")
    write_run(files, run.info)
    write_history(files.history, run.history)
    write_final(files, run.final)
    return files


def test_a_saved_run_reads_back_equal_and_gets_the_same_verdict(tmp_path: Path) -> None:
    s = a_clean_story()
    s.plan.pop()  # one violation, so that there is a verdict to compare
    run = s.run()
    save(run, tmp_path)
    again = load(tmp_path)
    assert again == run
    assert check(again) == check(run)
    assert [v.name for v in check(again).violations] == ["need-lost"]
    assert load(tmp_path / "soak") == run  # the soak/ folder itself works too


def test_a_malformed_history_names_its_line(tmp_path: Path) -> None:
    files = save(a_clean_story().run(), tmp_path)
    good = files.history.read_text()
    lines = good.splitlines()
    doc = json.loads(lines[1])
    doc["result"] = "info"  # an acknowledged operation cannot be of unknown outcome
    lines[1] = json.dumps(doc)
    files.history.write_text("\n".join(lines) + "\n")
    with pytest.raises(HistoryError, match=r"history.jsonl:2: result 'info' contradicts"):
        read_history(files.history)
    files.history.write_text(good)
    files.node(2).unlink()
    with pytest.raises(HistoryError, match=r"node2.json: cannot read"):
        load(tmp_path)


def test_the_recorder_writes_each_operation_once(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    rec = Recorder(0.0, path)
    done = rec.begin("transfer", 1, {"from": "a", "to": "b", "units": 5}, process="ledger1")
    done.outcome = "ok"
    rec.add(done)
    stuck = rec.begin("decide", 2, {"need": "n", "proposal": "p"}, process="decide2")
    f = Fault("stop", 0, 1.0, planned_s=2.0)
    rec.fault_started(f)
    ended = Fault("kill", 1, 2.0, planned_s=3.0)
    rec.fault_started(ended)
    rec.fault_ended(ended)
    assert rec.give_up_in_flight("still in flight when the workload stopped") == 1
    stuck.outcome = "ok"  # its thread answers late: not recorded again
    rec.add(stuck)
    rec.incident("crash", 2, "node2 died without the nemesis")
    rec.close()
    history = read_history(path)
    assert [(op.kind, op.outcome, op.process) for op in history.ops] == [
        ("transfer", "ok", "ledger1"), ("decide", "indeterminate", "decide2")]
    assert history.ops[1].reason == "still in flight when the workload stopped"
    assert [(x.kind, x.end_s > 0) for x in history.faults] == [("kill", True), ("stop", False)]
    assert [x.kind for x in history.incidents] == ["crash"]


def test_check_run_gives_the_report_of_the_run(tmp_path: Path) -> None:
    s = a_clean_story()
    save(s.run(), tmp_path)
    doc = soak.check_run(tmp_path, write=True)
    assert doc["violations"] == [] and doc["summary"] == "soak: 13 ops, 2 faults, 0 violations"
    assert doc["ops_by_kind"]["transfer"] == {"ok": 1, "retried": 1, "refused": 1,
                                              "indeterminate": 2}
    assert doc["check"]["converged"] and doc["check"]["violations"] == []
    assert [x["restarts"] for x in doc["node_stats"]] == [0, 1, 0]
    assert json.loads((tmp_path / "soak" / "report.json").read_text()) == doc


def test_soak_check_on_a_saved_run(tmp_path: Path) -> None:
    s = a_clean_story()
    s.transfer(0, 1, 1_000, outcome="ok", applied=2)
    save(s.run(), tmp_path)
    soak.check_run(tmp_path, write=True)  # what the run itself writes
    result = subprocess.run([str(BIN / "swarm-testnet"), "soak", "--check", str(tmp_path),
                             "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    doc = json.loads(result.stdout)
    assert doc["same_verdict_as_run"] is True
    assert [v["name"] for v in doc["check"]["violations"]] == \
        ["account-total-unexplained"] * 2
    # a report.json that disagrees (the checker changed since the run) is said so
    report = tmp_path / "soak" / "report.json"
    saved = json.loads(report.read_text())
    saved["check"]["violations"] = []
    report.write_text(json.dumps(saved))
    result = subprocess.run([str(BIN / "swarm-testnet"), "soak", "--check", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "verdict DIFFERS from the run's report.json" in result.stderr
    assert "violation (account-total-unexplained)" in result.stdout
    result = subprocess.run([str(BIN / "swarm-testnet"), "soak", "--check",
                             str(tmp_path / "nothing")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and "cannot read" in result.stderr
