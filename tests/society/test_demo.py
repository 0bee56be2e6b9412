"""scripts/mindstorm_demo.py: offline, with a local endpoint as a member, and with an unreachable one."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "mindstorm_demo.py"


def load_script():
    spec = importlib.util.spec_from_file_location("mindstorm_demo", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_offline_and_with_a_local_endpoint(tmp_path, chat_server, capsys):
    demo = load_script()
    assert demo.main(["--run-dir", str(tmp_path / "a"), "--economy-tasks", "20"]) == 0
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert [r["correct"] for r in summary["mindstorms"] if r["organiser"] == "monarchy"] == [1, 1, 1]
    # the tools abstain and the guesser's ballots name no proposal: the ties go to the tools' answers; the third
    # task needs two facts and a democracy elects one proposal
    assert [r["correct"] for r in summary["mindstorms"] if r["organiser"] == "democracy"] == [1, 1, 0]
    assert summary["economy"]["test_accuracy"] == 1.0
    assert (tmp_path / "a" / "task0-democracy" / "transcript.md").is_file()
    chat_server.answer = lambda messages: "1" if "Proposals" in messages[-1]["content"] else "Nairobi"
    assert demo.main(["--run-dir", str(tmp_path / "b"), "--base-url", chat_server.base_url, "--rounds", "2",
                      "--economy-tasks", "10"]) == 0
    transcript = json.loads((tmp_path / "b" / "task1-monarchy" / "transcript.json").read_text())
    assert "model" in [e["speaker"] for e in transcript["entries"]]
    capsys.readouterr()
    chat_server.__exit__(None, None, None)  # now nothing listens there
    assert demo.main(["--run-dir", str(tmp_path / "c"), "--base-url", chat_server.base_url, "--timeout", "1"]) == 2
    assert chat_server.base_url in capsys.readouterr().err
