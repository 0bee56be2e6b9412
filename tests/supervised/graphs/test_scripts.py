"""scripts/reproduce_clrs.py and scripts/bench_graphs.py at a tiny budget: every run goes through metarl.train,
the report (clrs.md with the tables and the paper's claims, clrs.json with every run, clrs.png) lands in --out,
and --from-json writes it again without training; the benchmark prints its table and writes JSON."""
import json

from tests.test_reproduce import SCRIPTS, load, one_thread, report  # noqa: F401 (one_thread: an autouse fixture)


def test_reproduce_clrs(tmp_path):
    script = load("reproduce_clrs")
    argv = ["--tiny", "--algorithms", "bfs", "minimum", "--out", str(tmp_path)]
    script.main(argv)
    data = report(tmp_path, "clrs", runs=12)  # 2 processors x 2 memories x (2 specialists + 1 generalist)
    multi = [r for r in data["runs"] if r["mode"] == "multi"]
    assert len(multi) == 4 and all(set(r["test"]) == {"bfs", "minimum"} for r in multi)
    assert {(r["processor"], r["memory"]) for r in multi} == {(p, m) for p in ("mpnn", "triplet_gmpnn")
                                                              for m in ("none", "lstm")}
    assert all(0 <= r["test"][a] <= 1 for r in data["runs"] for a in r["test"])
    assert any(line.startswith("Triplets") for line in data["comparison"])
    assert any(line.startswith("Generalist vs specialists") for line in data["comparison"])
    md = (tmp_path / "clrs.md").read_text()
    assert "Triplet-GMPNN + LSTM, generalist" in md and "| bfs |" in md and "| minimum |" in md
    (tmp_path / "clrs.md").unlink()
    script.main(argv + ["--from-json", str(tmp_path / "clrs.json")])
    assert (tmp_path / "clrs.md").read_text() == md


def test_bench_graphs(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert load("bench_graphs").main(["--processors", "mpnn", "triplet_gmpnn", "--sizes", "5", "8", "--batch", "2",
                                      "--hidden", "8", "--steps", "1", "--repeats", "1", "--no-isolate",
                                      "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [(r["processor"], r["n"]) for r in rows] == [("mpnn", 5), ("triplet_gmpnn", 5), ("mpnn", 8),
                                                       ("triplet_gmpnn", 8)]
    assert all(r["graphs_per_s"] > 0 and r["peak_memory_mib"] >= 0 for r in rows)
    assert "graphs/s" in capsys.readouterr().out
