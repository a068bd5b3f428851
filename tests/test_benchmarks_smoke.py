"""Tiny runs of the benchmark scripts, so that they do not rot. No gensim needed."""

import math

from benchmarks import first_run, mammals, scaling, throughput, uploader_steps
from benchmarks.mammals import Point, first_reaching


def test_first_reaching_needs_both_bars():
    curve = [Point(10, 1.0, 2.0, 0.85, 1.5), Point(20, 2.0, 4.0, 0.97, 1.2),
             Point(30, 3.0, 6.0, 0.96, 1.05), Point(40, 4.0, 8.0, 0.975, 1.08)]
    assert first_reaching(curve, 0.90).epoch == 20
    assert first_reaching(curve, 0.97, 1.09).epoch == 40  # 20 fails MR, 30 fails MAP
    assert first_reaching(curve, 0.99) is None
    assert first_reaching([], 0.5, math.inf) is None


def test_mammals_smoke(capsys):
    runs = mammals.main(["--no-gensim", "--seeds", "0", "--epochs", "6", "--burnin", "2",
                         "--eval-every", "3", "--curve"])
    out = capsys.readouterr().out
    assert [p.epoch for p in runs[0].curve] == [3, 6]
    assert runs[0].curve[-1].train_s <= runs[0].curve[-1].wall_s
    assert "hype seed 0" in out and "curve hype seed 0" in out
    assert "gensim" not in out


def test_mammals_ratio_line_without_gensim_installed(capsys):
    """The report's ratios, fed a fake peer run, so the gensim-only code path is exercised too."""
    ours = mammals.Run("hype seed 0", [Point(10, 1.0, 1.5, 0.95, 1.1)])
    peer = mammals.Run("gensim seed 0", [Point(100, 30.0, 40.0, 0.91, 1.6)])
    mammals.report([ours, peer], curve=False)
    out = capsys.readouterr().out
    assert "ratio gensim seed 0 / hype to MAP >= 0.9: 30.0x on train s, 26.7x on wall s" in out
    assert "ratio gensim seed 0 / hype to gensim's final MAP 0.910: 30.0x" in out


def test_throughput_smoke(capsys):
    results = throughput.main(["--synthetic-nodes", "300", "--dim", "4", "--negs", "5",
                               "--workers", "1", "2", "--epochs", "2"])
    out = capsys.readouterr().out
    assert [m.workers for m in results] == [1, 2]
    assert all(len(m.rates) == 2 and min(m.rates) > 0 for m in results)
    assert "speedup 1 -> 2 workers" in out and "peak RSS" in out


def test_scaling_probes_smoke(capsys):
    """Each probe's 1- and 2-process times give a ratio; the trainer part is throughput's measure."""
    out = scaling.main(["--synthetic-nodes", "300", "--scale", "0.002", "--repeats", "1", "--no-train"])
    printed = capsys.readouterr().out
    assert set(out) == {"alu", "stream", "rows private", "rows shared"}
    assert all(0 < r < 10 for r in out.values())
    assert printed.count("x of 2 (pairs") == 4 and "synthetic random_taxonomy(300" in printed


def test_first_run_smoke(capsys):
    """One 2-epoch `cli.py train` through the script's timed child (about 8 s, mostly the CLI's
    imports and the new store); the fresh-cache pair of runs is the script's default."""
    first, warm, helps = first_run.main(["--smoke"])
    out = capsys.readouterr().out
    assert warm is None and len(helps) == 1
    assert 0 < first.training_s < first.wall_s
    assert len(first.epochs) == 2 and len(first.evals) == 2  # evaluated every epoch (the default)
    assert first.compiles or first.loads  # the kernels came from numba, one way or the other
    assert "training s (compile included)" in out and "against the target of <= 15 s" in out
    assert "cli.py --help: median" in out and "CPU: " in out


def test_uploader_steps_smoke(capsys):
    """Three mammal checkpoints through the timed uploader: each step has its thread-CPU figure
    and SQLite's statements are counted; the wrappers are gone afterwards."""
    from tracker.training import storing

    before = storing.StoringPass._store_checkpoint
    mammals_csv = str(uploader_steps.ROOT / "data" / "mammal_closure.csv")
    out = uploader_steps.main(["--dataset", mammals_csv, "--epochs", "3", "--workers", "1"])
    printed = capsys.readouterr().out
    assert storing.StoringPass._store_checkpoint is before
    assert {"create_logged_model", "log_batch (metrics + tags)", "torch.save + its SHA-256"} <= set(out)
    assert 0 < out["torch.save + its SHA-256"] < out["whole job"]
    assert "uploader CPU per checkpoint (median of 2)" in printed and "SQL statements" in printed
