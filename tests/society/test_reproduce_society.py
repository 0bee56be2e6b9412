"""scripts/reproduce_society.py at its tiny budget, and the report written again from its JSON."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load_script():
    sys.path.insert(0, str(SCRIPTS))  # the script imports repro_lib beside it
    try:
        spec = importlib.util.spec_from_file_location("reproduce_society", SCRIPTS / "reproduce_society.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(SCRIPTS))
    return module


def test_reproduce_society_tiny_and_from_json(glyph_checkpoint, tmp_path, capsys):
    script = load_script()
    script.main(["--tiny", "--describer", str(glyph_checkpoint), "--out", str(tmp_path / "a")])
    report = json.loads((tmp_path / "a" / "society.json").read_text())
    (run,) = report["runs"]
    assert set(run["results"]) >= {"monarchy", "democracy", "democracy_shuffled", "democracy_shuffled_old",
                                   "economy", "describer_alone", "guesser_alone"}
    assert run["results"]["monarchy"]["accuracy"] >= 0.5 and run["results"]["calculator_alone"]["accuracy"] == 0
    assert [r[0] for r in report["table"]["rows"]][-1].startswith("economy")
    md = (tmp_path / "a" / "society.md").read_text()
    assert "| who answers |" in md and "monarchy (router leads)" in md and (tmp_path / "a" / "society.png").is_file()
    capsys.readouterr()
    script.main(["--from-json", str(tmp_path / "a" / "society.json"), "--out", str(tmp_path / "b")])
    assert (tmp_path / "b" / "society.md").read_text() == md  # the same report, nothing rerun
