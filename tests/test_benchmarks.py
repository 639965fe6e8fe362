"""Smoke run of the quality benchmark (--quick): it trains, writes its JSON, table and plot, and merges."""
import functools
import json
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).parent.parent / "benchmarks"


@pytest.mark.slow
def test_quality_quick(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ADNTN_CACHE", str(tmp_path / "cache"))  # the +kd rows' teacher logits
    torch.set_num_threads(1)
    main = runpy.run_path(str(BENCH / "quality.py"), run_name="quality")["main"]
    out = tmp_path / "q.json"
    summary = main(["--quick", "--out", str(out)])
    assert {s["arch"] for s in summary} == {"dense", "no-layer", "ttn", "ttn+kd", "lowrank", "narrow"}
    assert next(s for s in summary if s["arch"] == "no-layer")["params"] == 40 * 4096 + 4096 + 4096 * 10 + 10
    assert out.with_suffix(".png").stat().st_size > 0 and "ttn" in out.with_suffix(".txt").read_text()
    runs = json.loads(out.read_text())["runs"]
    ttn = next(r for r in runs if r["arch"] == "ttn")
    assert ttn["ratio"] >= 2000 and ttn["accuracy"] > 0.15 and ttn["losses"][0] < 2.3  # trained, off chance
    assert [a["fn"] for a in ttn["activations"]] == ["tanh"] * len(ttn["activations"]) and ttn["activations"]
    assert all(0 < a["nonlinear"] < 1 for a in ttn["activations"])  # the trained tree's tanh, how far it bends
    assert next(r for r in runs if r["arch"] == "dense")["activations"] is None
    kd = next(r for r in runs if r.get("kd"))
    assert kd["arch"] == "ttn" and kd["accuracy"] > 0.15 and kd["test_accuracy"][-1] == kd["accuracy"]

    # a run done elsewhere merges in, and is not trained again
    other = tmp_path / "other.json"
    extra = dict(ttn, arch="frozen", target=1, ratio=None, layer_params=0, accuracy=0.5)
    other.write_text(json.dumps({"recipe": {}, "runs": [extra]}))
    merged = main(["--quick", "--out", str(out), "--merge", str(other)])
    assert next(s for s in merged if s["arch"] == "frozen")["acc_mean"] == 0.5
    assert len(json.loads(out.read_text())["runs"]) == len(runs) + 1

    # the recipe's options make rows of their own, beside the plain ones
    variant = main(["--quick", "--out", str(out), "--archs", "ttn", "--no-kd", "--augment", "--bn",
                    "--core-lr", "3e-3"])
    assert "ttn+bn+corelr0.003+aug" in {s["arch"] for s in variant} and "ttn" in {s["arch"] for s in variant}
    assert len(json.loads(out.read_text())["runs"]) == len(runs) + 2

    # the nonlinearity's ablation (opt in): the ttn's own tree and parameters, activation identity
    # (distilled and fitted too, as the ttn's rows are)
    ablation = main(["--quick", "--out", str(out), "--archs", "ttn-identity"])
    assert {"ttn-identity", "ttn-identity+kd"} <= {s["arch"] for s in ablation}
    linear = next(r for r in json.loads(out.read_text())["runs"] if r["arch"] == "ttn-identity")
    assert linear["config"] == dict(ttn["config"], activation="identity")
    assert linear["layer_params"] == ttn["layer_params"]
    main(["--quick", "--out", str(out), "--archs", "ttn-identity", "--kd", "--fit"])
    run = next(r for r in json.loads(out.read_text())["runs"] if r["arch"] == "ttn-identity" and r.get("fit"))
    assert run["config"] == linear["config"] and 0 < run["fit_error"] < 1 and run["accuracy"] > 0.1  # off chance

    # +fit: from the dense row's saved model, the cores fitted to its layer's outputs first
    fit = main(["--quick", "--out", str(out), "--archs", "ttn", "--no-kd", "--fit"])
    assert "ttn+fit" in {s["arch"] for s in fit}
    run = next(r for r in json.loads(out.read_text())["runs"] if r.get("fit") and r["arch"] == "ttn")
    assert run["ratio"] >= 2000 and run["fit_error"] > 0 and run["accuracy"] > 0.15
    fit = main(["--quick", "--out", str(out), "--archs", "ttn", "--no-kd", "--fit", "relu"])  # after the ReLU
    assert {"ttn+fit", "ttn+fitrelu"} <= {s["arch"] for s in fit}
    run = next(r for r in json.loads(out.read_text())["runs"] if r.get("fit") == "relu")
    assert run["fit_error"] > 0 and run["accuracy"] > 0.15
    fit = main(["--quick", "--out", str(out), "--archs", "ttn", "--no-kd", "--fit", "init"])  # cores not fitted
    run = next(r for r in json.loads(out.read_text())["runs"] if r.get("fit") == "init")
    assert "ttn+fitinit" in {s["arch"] for s in fit} and run["fit_error"] is None and run["accuracy"] > 0.15

    # a teacher trained longer than the rows that learn from it: its own cached model, its own label
    longer = main(["--quick", "--out", str(out), "--archs", "ttn", "--kd", "--teacher-epochs", "2"])
    assert {"ttn+kd", "ttn+kd(t2)"} <= {s["arch"] for s in longer}
    assert len(list((tmp_path / "cache" / "quality-teachers").glob("*-2ep-*"))) == 1

    # distilled from the mean logits of two seeds' dense models (seed 1's trained for it); fitted to seed 0's
    ens = main(["--quick", "--out", str(out), "--archs", "ttn", "--kd", "--augment", "--fit",
                "--teacher-seeds", "1", "0"])
    assert "ttn+fit+aug+kd(ens01)" in {s["arch"] for s in ens}
    run = next(r for r in json.loads(out.read_text())["runs"] if r.get("teacher_seeds"))
    assert run["teacher_seeds"] == [0, 1] and run["fit_error"] > 0 and run["accuracy"] > 0.15
    assert len(list((tmp_path / "cache" / "quality-teachers").glob("*-1ep-*-seed1-aug.safetensors"))) == 1
    [own] = (tmp_path / "cache" / "quality-teachers").glob("*-1ep-*-seed0-aug.safetensors")
    own.unlink()  # distilled from seed 1's model alone, not fitted: seed 0's own dense model is not needed
    other = main(["--quick", "--out", str(out), "--archs", "ttn", "--kd", "--augment", "--teacher-seeds", "1"])
    assert "ttn+aug+kd(ens1)" in {s["arch"] for s in other} and not own.exists()
    for bad, said in ((["--lr", "0"], "must be a finite number > 0, got 0"), (["--core-lr", "nan"], "got nan"),
                      (["--teacher-seeds", "0", "1"], "--teacher-seeds needs --augment"),
                      (["--augment", "--teacher-seeds", "-1"], "must be at least 0, got -1"),
                      (["--archs", "ttn-idnetity"], "invalid choice: 'ttn-idnetity'")):
        with pytest.raises(SystemExit):
            main(["--quick", "--out", str(out), *bad])
        assert said in capsys.readouterr().err


def test_quality_sanity_rows_only_in_a_whole_run():
    """A part of a split run (--archs) leaves out the MNIST-5000 sanity rows, which the whole run already has."""
    rows_to_run = runpy.run_path(str(BENCH / "quality.py"), run_name="quality")["rows_to_run"]
    tasks = {(archs, sanity): {r["task"] for r in rows_to_run(False, (2000,), archs, sanity)}
             for archs in (None, ("ttn",)) for sanity in (None, True, False)}
    assert tasks[None, None] == tasks[("ttn",), True] == {"mnist1d", "mnist5000"}
    assert tasks[("ttn",), None] == tasks[None, False] == {"mnist1d"}


def test_quality_pairs_table_pairs_the_tree_with_tt_and_its_twin_by_seed():
    """ttn rows against tt and the linear twin with the same suffix, on the seeds both ran, with a paired t-test."""
    pairs_table = runpy.run_path(str(BENCH / "quality.py"), run_name="quality")["pairs_table"]
    acc = {"ttn-20000+bn": [0.91, 0.92, 0.90, 0.93], "tt-20000+bn": [0.90, 0.91, 0.90, 0.91],
           "ttn-identity-20000+bn": [0.92, 0.92, 0.91], "ttn-frozen": [0.5, 0.6], "tt": [0.8, 0.8]}
    runs = [dict(row=row, seed=seed, accuracy=a) for row, accs in acc.items() for seed, a in enumerate(accs)]
    lines = [line.split(" | ") for line in pairs_table(runs).splitlines() if line.startswith("| ttn")]
    assert [(line[0], line[1], line[2]) for line in lines] == [("| ttn-20000+bn", "tt-20000+bn", "4"),
                                                                ("| ttn-20000+bn", "ttn-identity-20000+bn", "3")]
    assert lines[0][3] == "+1.00 ± 0.41" and lines[0][4] == "3 of 4"  # differences 1, 1, 0, 2 points
    assert lines[1][3].startswith("-0.67") and lines[1][4] == "0 of 3"
    assert 0.05 < float(lines[0][5].rstrip(" |")) < 0.2  # t = 1.0 / 0.408 on 3 degrees of freedom: p = 0.092
    assert pairs_table(runs[:4]) == ""  # one row alone: nothing to pair
    runs += [dict(row="tt-legs-20000+bn", seed=seed, accuracy=0.9) for seed in range(2)]
    assert [line.split(" | ")[1] for line in pairs_table(runs).splitlines() if line.startswith("| ttn")] == [
        "tt-20000+bn", "tt-legs-20000+bn", "ttn-identity-20000+bn"]


def test_quality_tt_legs_is_tt_on_the_ttns_legs_at_its_rank():
    """The tt-legs row: a chain with the tree's legs and bond rank, at the ttn's budget (2 % more parameters at
    2,000x), where the ratio search gives tt 18 % fewer."""
    q = runpy.run_path(str(BENCH / "quality.py"), run_name="quality")
    models = {arch: q["build"](dict(task="mnist1d", arch=arch, target=2000), 0)[2] for arch in ("ttn", "tt", "tt-legs")}
    gens = {arch: m.gen for arch, m in models.items()}
    assert gens["tt-legs"].arch == "tt" and gens["tt-legs"].legs.dims == gens["ttn"].legs.dims
    assert gens["tt-legs"].config["rank"] == gens["ttn"].config["rank"]
    assert [g.num_params for g in gens.values()] == [8273, 6785, 8465]
    assert [q["label"](r) for r in q["rows_to_run"](False, (2000,), ["tt-legs"]) if r["arch"] == "tt-legs"] == [
        "tt-legs", "tt-legs+kd"]


def test_quality_merged_runs_of_other_epochs_keep_them_in_their_label(tmp_path):
    """A run made with --epochs 24 and merged into a 12-epoch result file is labelled @24, not taken for the 12-epoch
    recipe's row (the linear twin's 24-epoch runs once were)."""
    load_runs = runpy.run_path(str(BENCH / "quality.py"), run_name="quality")["load_runs"]
    run = dict(task="mnist1d", arch="ttn-identity", target=2000, aug=True, kd=True, fit=True, seed=0, epochs=None)
    (tmp_path / "a.json").write_text(json.dumps(dict(recipe=dict(epochs=24), runs=[dict(run, losses=[0.3] * 24)])))
    (tmp_path / "b.json").write_text(json.dumps(dict(recipe=dict(epochs=12), runs=[dict(run, losses=[0.4] * 12)])))
    done = load_runs([tmp_path / "b.json", tmp_path / "a.json", tmp_path / "absent.json"], 12)
    assert sorted(done) == ["mnist1d/ttn-identity+fit+aug+kd/2000/0", "mnist1d/ttn-identity+fit+aug+kd@24/2000/0"]
    assert list(load_runs([tmp_path / "a.json"], 24)) == ["mnist1d/ttn-identity+fit+aug+kd/2000/0"]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")
def test_distributed_train_quick():
    """The torchrun benchmark's smoke run: one process and two, the same epoch loss (the same trajectory)."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, str(BENCH / "distributed_train.py"), "--quick"], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line.split() for line in r.stdout.splitlines()[2:]]
    assert [row[1] for row in rows] == ["1", "2"] and rows[0][4] == rows[1][4]


def test_quality_fmnist_quick(tmp_path, monkeypatch):
    """The Fashion-MNIST benchmark on a tiny idx fixture: every default row trains, JSON, table and plot, resume."""
    from .test_data import _write

    _write(tmp_path, n_train=128, n_test=128)  # one batch size: each layer's plan is compiled once
    monkeypatch.setenv("ADNTN_FASHION_MNIST", str(tmp_path))
    torch.set_num_threads(1)
    main = runpy.run_path(str(BENCH / "quality_fmnist.py"), run_name="quality_fmnist")["main"]
    out = tmp_path / "q.json"
    summary = main(["--epochs", "1", "--seeds", "0", "--json", str(out), "--plot", str(tmp_path / "q.png")])
    rows = {s["row"]: s for s in summary}
    assert set(rows) == {"logistic", "dense", "tt", "lowrank", "narrow", "ttn-binary", "ttn", "mera", "ttn-frozen"}
    assert all(s["ratio"] >= 2000 for r, s in rows.items() if r not in ("logistic", "dense", "lowrank", "narrow"))
    assert abs(rows["narrow"]["params"] - rows["ttn"]["params"]) < 800  # the same total size, one width apart
    assert rows["ttn"]["config"]["legs"] == 4
    assert rows["ttn-binary"]["config"]["layout"] == "binary" and rows["ttn"]["config"]["layout"] != "binary"
    assert rows["ttn-frozen"]["params"] == rows["dense"]["params"] - 784 * 4096 - 4096  # only FC2 trains
    assert (tmp_path / "q.png").stat().st_size > 0
    runs = json.loads(out.read_text())["runs"]
    assert len(runs) == 9 and all(len(r["test_accuracy"]) == 1 for r in runs)
    by_row = {r["row"]: r for r in runs}
    assert [a["path"] for a in by_row["ttn"]["activations"]] == ["ttn.level1.node0", "ttn.level1.node1"]
    assert by_row["tt"]["activations"] == [] and by_row["dense"]["activations"] is None
    again = main(["--epochs", "1", "--seeds", "0", "--json", str(out), "--rows", "ttn+bn", "ttn-identity"])
    assert len(json.loads(out.read_text())["runs"]) == 11 and len(again) == 11  # the 9 runs were not trained again
    linear = {s["row"]: s for s in again}["ttn-identity"]  # the nonlinearity's ablation: the same tree, linear
    assert linear["config"] == dict(rows["ttn"]["config"], activation="identity")
    assert linear["layer_params"] == rows["ttn"]["layer_params"]
    # from the trained dense model: the teacher is trained once and cached, FC1's cores fitted to it, then distilled
    monkeypatch.setenv("ADNTN_CACHE", str(tmp_path / "cache"))
    fitted = {s["row"]: s for s in main(["--epochs", "1", "--seeds", "0", "--json", str(out), "--rows", "ttn+fit+kd",
                                         "tt+fit"])}
    [cached] = (tmp_path / "cache" / "quality-teachers").iterdir()
    assert cached.suffix == ".safetensors"
    assert fitted["ttn+fit+kd"]["config"] == rows["ttn"]["config"]
    runs = {r["row"]: r for r in json.loads(out.read_text())["runs"]}
    assert all(0 < runs[r]["fit_error"] < 1 for r in ("ttn+fit+kd", "tt+fit")) and runs["ttn"]["fit_error"] is None
    assert all(np.isfinite(runs[r]["losses"]).all() for r in ("ttn+fit+kd", "tt+fit"))


def test_quality_convnet_quick(tmp_path, monkeypatch):
    """The conv-net head benchmark's --quick run on a tiny idx fixture: the trunk trains once, its features are
    cached as .npy, every quick row trains on them; JSON, table and plot written; a rerun trains nothing; a +bn+kd
    row distils from the dense head's cached logits, and trains that teacher first where its logits are gone; +fit
    rows start from the dense head's cached weights, FC1 and FC2 fitted to it; +e2e rows train a fresh trunk with
    the head."""
    from .test_data import _write

    _write(tmp_path, n_train=384, n_test=256)
    monkeypatch.setenv("ADNTN_FASHION_MNIST", str(tmp_path))
    torch.set_num_threads(1)
    main = runpy.run_path(str(BENCH / "quality_convnet.py"), run_name="quality_convnet")["main"]
    out, cache = tmp_path / "c.json", tmp_path / "features"
    summary = main(["--quick", "--json", str(out), "--cache", str(cache)])
    rows = {s["row"]: s for s in summary}
    assert set(rows) == {"dense", "no-layer", "ttn-20000", "tt-20000", "ttn-frozen"}
    assert all(rows[r]["ratio"] >= 20000 for r in ("ttn-20000", "tt-20000", "ttn-frozen"))
    assert rows["ttn-frozen"]["params"] == 4096 * 10 + 10  # only the last layer trains
    d = json.loads(out.read_text())
    assert len(d["runs"]) == 5 and all(0 <= a <= 1 for r in d["runs"] for a in r["test_accuracy"])
    assert list(d["trunks"]) == ["0"] and len(list(cache.glob("*_t*.npy"))) == 2  # one trunk, its features cached
    assert out.with_suffix(".png").stat().st_size > 0 and "ttn-20000" in out.with_suffix(".txt").read_text()
    assert len(main(["--quick", "--json", str(out), "--cache", str(cache)])) == 5  # resumed: nothing retrained
    [logits] = cache.glob("*_logits.npy")  # the dense row's, on the 384 training features
    assert np.load(logits).shape == (384, 10)
    logits.unlink()
    summary = main(["--quick", "--json", str(out), "--cache", str(cache), "--rows", "ttn-20000+bn+kd"])
    kd = {s["row"]: s for s in summary}["ttn-20000+bn+kd"]
    assert kd["ratio"] >= 20000 and kd["seeds"] == 1 and logits.exists()  # the teacher was trained again
    [dense] = cache.glob("*_dense1.safetensors")  # the dense head's weights, beside its logits: +fit starts there
    dense.unlink()
    summary = main(["--quick", "--json", str(out), "--cache", str(cache), "--rows", "tt-20000+fit", "ttn-20000+fit+kd"])
    fit = {s["row"]: s for s in summary}["ttn-20000+fit+kd"]
    assert fit["ratio"] >= 20000 and dense.exists()  # the dense head was trained again for it
    errors = {r["row"]: r["fit_errors"] for r in json.loads(out.read_text())["runs"] if "+fit" in r["row"]}
    assert set(errors) == {"tt-20000+fit", "ttn-20000+fit+kd"} and all(len(e) == 2 for e in errors.values())
    summary = main(["--quick", "--json", str(out), "--cache", str(cache), "--rows", "dense+e2e", "ttn-20000+e2e"])
    rows = {s["row"]: s for s in summary}
    trunk = json.loads(out.read_text())["trunks"]["0"]
    assert rows["dense+e2e"]["acc_mean"] == trunk["test_accuracy"][-1]  # the trunk's own run, not trained again
    assert rows["ttn-20000+e2e"]["ratio"] >= 20000 and rows["ttn-20000+e2e"]["params"] > 128 * 9 * 64  # trunk too
    rates, train = [], main.__globals__["train_classifier"]

    @functools.wraps(train)  # main reads the recipe's defaults from its signature
    def spy(model, *args, core_lr=None, **kw):  # the cores' learning rate each row trains with
        rates.append(core_lr)
        return train(model, *args, core_lr=core_lr, **kw)

    monkeypatch.setitem(main.__globals__, "train_classifier", spy)
    main(["--quick", "--json", str(out), "--cache", str(cache), "--rows", "ttn-20000+bn", "ttn-20000+bn+corelr"])
    assert rates == [None, 3e-3]
    summary = main(["--quick", "--json", str(out), "--cache", str(cache), "--rows", "ttn-frozen+bn"])
    frozen = {s["row"]: s for s in summary}["ttn-frozen+bn"]
    assert frozen["params"] == 4096 * 10 + 10 + 2 * 2 * 4096  # FC3 and the two batch norms train, the cores do not
    for bad in ("ttn-20000+kd+bn", "ttn-20000+foo", "dense+kd", "ttn-20000+kd+fit", "ttn-20000+bn+fit",
                "dense+fit", "ttn-20000+corelr+bn", "ttn-20000+fit+e2e"):  # refused, never half-applied
        with pytest.raises(SystemExit):
            main(["--quick", "--json", str(out), "--cache", str(cache), "--rows", bad])
    before = out.read_text()
    for flag, bad in (("--epochs", "0"), ("--trunk-epochs", "-1"), ("--seeds", "-1"), ("--ratios", "1")):
        with pytest.raises(SystemExit):  # at parse time: a ConfigError in a run would mark the row skipped
            main([flag, bad, "--json", str(out), "--cache", str(cache), "--rows", "no-layer"])
    with pytest.raises(SystemExit):  # a random trunk is never trained, so no row trains it end to end
        main(["--quick", "--trunk-epochs", "0", "--json", str(out), "--cache", str(cache), "--rows", "ttn-20000+e2e"])
    assert out.read_text() == before


def test_quality_convnet_random_trunk(tmp_path, monkeypatch):
    """--trunk-epochs 0: the heads train on the features of the trunk at its random init, whose batch norms'
    statistics come from the training images (so its features are neither the trained trunk's nor zero-mean
    noise); its runs go to their own JSON (another recipe) and features (another cache key)."""
    from .test_data import _write

    _write(tmp_path, n_train=384, n_test=256)
    monkeypatch.setenv("ADNTN_FASHION_MNIST", str(tmp_path))
    torch.set_num_threads(1)
    main = runpy.run_path(str(BENCH / "quality_convnet.py"), run_name="quality_convnet")["main"]
    out, cache = tmp_path / "r.json", tmp_path / "features"
    rows = {s["row"]: s for s in main(["--quick", "--trunk-epochs", "0", "--json", str(out), "--cache", str(cache),
                                      "--rows", "no-layer", "ttn-20000+bn", "ttn-identity-20000+bn"])}
    assert set(rows) == {"no-layer", "ttn-20000+bn", "ttn-identity-20000+bn"}
    tree, linear = rows["ttn-20000+bn"], rows["ttn-identity-20000+bn"]  # the nonlinearity's ablation: the same tree
    assert [c["activation"] for c in linear["config"]] == ["identity"] * 2 != [c["activation"] for c in tree["config"]]
    assert linear["layer_params"] == tree["layer_params"] and linear["ratio"] == tree["ratio"]
    d = json.loads(out.read_text())
    assert d["recipe"]["trunk_epochs"] == 0 and d["trunks"]["0"]["test_accuracy"] == []  # not trained
    [rand] = cache.glob("seed0_e0_*_train.npy")
    main(["--quick", "--json", str(tmp_path / "t.json"), "--cache", str(cache), "--rows", "no-layer"])
    [trained] = cache.glob("seed0_e1_*_train.npy")
    f, g = np.load(rand), np.load(trained)
    assert f.shape == g.shape == (384, 128 * 3 * 3) and not np.allclose(f, g)
    # the batch norms saw the images, so the features are at unit scale (their default statistics give a mean ~0.04)
    assert f.min() >= 0 and 0.1 < f.mean() < 10 and (f.std(axis=0) > 0).mean() > 0.9
    assert "random init" in out.with_suffix(".txt").read_text()
    with pytest.raises(SystemExit):  # the trained trunk's runs are another recipe: never merged
        main(["--quick", "--trunk-epochs", "0", "--json", str(out), "--merge", str(tmp_path / "t.json"),
              "--cache", str(cache), "--no-train"])


def test_lm_cpu_quick(tmp_path):
    """The GPT-2 benchmark's smoke run (a tiny model, no peers): dense and compressed compiled rows, timed, within
    1e-4 of torch eager, with their kernel profiles; the table and plot written beside the JSON."""
    import subprocess
    import sys

    out = tmp_path / "lm.json"
    r = subprocess.run([sys.executable, str(BENCH / "lm_cpu.py"), "--quick", "--no-inductor", "--no-ort",
                        "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    comp = {row["model"]: row for row in res["rows"] if row["variant"] == "compiled"}
    assert "dense" in comp and any(row["target_ratio"] for row in comp.values())  # dense and compressed
    assert all(row["max_rel_error"] < 1e-4 and row["median_s"] > 0 and not row["error"] for row in comp.values())
    assert {row["variant"] for row in res["rows"]} == {"compiled", "torch eager"} and res["sgemm_gflop_per_s"] > 0
    assert all("gemm (dense weights)" in p["classes"] for p in res["profiles"])
    assert out.with_suffix(".txt").is_file() and out.with_suffix(".png").stat().st_size > 0


def test_models_cpu_quick(tmp_path):
    """The bundled networks' benchmark smoke run (32 x 32 inputs, one thread, no peers): the dense and compressed
    models compiled, timed and within 1e-4 of torch eager; the rows merged from the per-thread-count child; the
    table and plot written beside the JSON."""
    import subprocess
    import sys

    out = tmp_path / "models.json"
    r = subprocess.run([sys.executable, str(BENCH / "models_cpu.py"), "--quick", "--no-inductor", "--no-peers",
                        "--models", "resnet18", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    comp = [row for row in res["rows"] if row["variant"] == "compiled"]
    assert {row["form"] for row in comp} == {"dense", "compressed"} and {row["threads"] for row in comp} == {1}
    assert all(row["max_rel_error"] < 1e-4 and row["median_s"] > 0 and not row["error"] for row in comp)
    assert all(row["gflop_per_s"] > 0 and row["peak_fraction"] > 0 for row in comp)
    assert {row["variant"] for row in res["rows"]} == {"compiled", "torch eager"} and res["sgemm_gflop_per_s"]["1"] > 0
    dense = [row for row in comp if row["form"] == "dense"]
    assert all(row["flops"] == row["call_graph_flops"] for row in dense)  # hooks and the compiled graph agree
    for row in comp:  # where the time goes, per kernel kind; at most the call's time, give or take the noise
        prof = row["kernel_profile"]
        assert "conv" in prof and all(v > 0 for v in prof.values()), prof
        assert sum(prof.values()) < 3 * row["median_s"], (prof, row["median_s"])
    assert "ms per kernel kind" in out.with_suffix(".txt").read_text()
    assert out.with_suffix(".txt").is_file() and out.with_suffix(".png").stat().st_size > 0


def test_models_cpu_thread_speedups_are_interleaved_in_one_process():
    """models_cpu's thread scaling: a compiled model at one thread and at two, alternating call by call in one
    process (TVM's pool resized), and the SGEMM ceiling the same way; torch's thread count is restored."""
    import math
    import sys
    import time

    import numpy as np

    import adntn_compiler as adntn

    sys.path.insert(0, str(BENCH))
    import models_cpu

    exe = adntn.compile(adntn.ttn((64, 256), rank=3, seed=0), batch_size=64)
    x = np.ones((64, 256), np.float32)
    ups = models_cpu.thread_speedup({"ttn": lambda: exe(x)}, 2, 3)
    # (a ratio only: its size depends on what else runs on the machine, e.g. the other test workers)
    assert set(ups) == {"ttn"} and math.isfinite(ups["ttn"]) and ups["ttn"] > 0, ups
    threads = torch.get_num_threads()
    up = models_cpu.sgemm_speedup(2, rounds=2, n=256)
    assert math.isfinite(up) and up > 0 and torch.get_num_threads() == threads
    np.testing.assert_allclose(exe(x), exe.reference(x), rtol=1e-4, atol=1e-4)  # the resized pool still computes
    s = time.perf_counter()
    exe(x)
    assert time.perf_counter() - s < 5


def test_quality_schedule_study_groups_a_row_across_epoch_counts():
    """The right panel's rows: one label at several epoch counts (@N, and a teacher of another count (tN)) is one
    line; a row run only at another epoch count than the recipe's (@N alone: an ablation of the 24-epoch recipe) is
    one point; a row of the recipe's epochs alone is none."""
    schedule_study = runpy.run_path(str(BENCH / "quality.py"), run_name="quality")["schedule_study"]
    row = dict(task="mnist1d", target=2000, curve=[0.5])
    summary = [dict(row, arch="ttn+kd", epochs=12), dict(row, arch="ttn+kd(t24)@36", epochs=36),
               dict(row, arch="ttn+kd@24", epochs=24), dict(row, arch="tt", epochs=12),
               dict(row, arch="ttn+kd@24", epochs=24, target=20000)]
    study = schedule_study(summary)
    assert list(study) == [("ttn+kd", 2000), ("ttn+kd", 20000)]
    assert [s["epochs"] for s in study["ttn+kd", 2000]] == [12, 24, 36] and study["ttn+kd", 20000] == summary[-1:]
