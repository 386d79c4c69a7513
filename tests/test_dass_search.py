"""rdnas dass search: a FLOPs-capped pick by a DaSS model, KD-trained against a FLOPs-matched random pick and the
best-by-proxy pick (tiny teacher and an untrained model: the plumbing and the pick rules, not results)."""

import csv
import json

import pytest
import torch

from rdnas.cli import main
from rdnas.kd import TaskSpec, TeacherRecipe, save_teacher, train_teacher
from rdnas.kd import search
from rdnas.kd.embeddings import last_stage_map, probe_image
from rdnas.minibench.build import sample_architectures
from rdnas.predictors.dass import DaSSNet, MetaSGD, load_model, predict_for_teacher, save_model
from rdnas.spaces import get_space

SPACE = get_space("resnet48")
TEACHER = {"options": {"resnet_stem": "small", "width_divisor": 8}, "epochs": 1, "seed": 0, "batch_size": 32}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 1-epoch digits teacher (8 px, 3 classes) and an untrained DaSS model of its map shape."""
    root = tmp_path_factory.mktemp("search")
    task = TaskSpec("digits-s", "digits", (0, 1, 2), 8, 96, 45, teacher=TeacherRecipe(**TEACHER))
    teacher = train_teacher(task, SPACE)
    save_teacher(teacher, root / "t.pt")
    maps = last_stage_map(teacher.network, probe_image(1, 8, 0))
    features = SPACE.encode(SPACE.largest().unsqueeze(0)).shape[1]
    net = dict(channels=maps.shape[0], arch_features=features, width=8, arch_width=4, hidden=8, use_student=True,
               use_teacher=True, use_arch=True)
    torch.manual_seed(0)
    model = MetaSGD(DaSSNet(**net))
    save_model(root / "dass.pt", model, {**net, "space": "resnet48", "probe_seed": 0,
                                         "image_sides": [list(maps.shape[1:])], "label": "kd", "adapt": True,
                                         "embedding": "remap", "student_options": {"width_divisor": 8}})
    return root, teacher


def test_flops_matched_draws_within_the_tolerance_or_takes_the_nearest():
    flops = torch.tensor([100.0, 105.0, 95.0, 300.0, 500.0])
    draws = {search.flops_matched(flops, 0, torch.Generator().manual_seed(s)) for s in range(30)}
    assert draws == {1, 2}  # both within 10 % of 100, never the target itself
    assert search.flops_matched(flops, 4, torch.Generator()) == 3  # none within 10 % of 500: the nearest
    with pytest.raises(ValueError, match="at least 2 candidates"):
        search.flops_matched(flops[:1], 0, torch.Generator())


def test_choose_picks_under_the_cap_and_refuses_a_cap_below_every_candidate():
    predicted = torch.tensor([9.0, 5.0, 7.0, 1.0])
    proxy = torch.tensor([1.0, 3.0, 2.0, 9.0])
    flops = torch.tensor([400.0, 100.0, 104.0, 101.0])
    picks = search.choose(["a", "b", "c", "d"], predicted, proxy, flops, max_flops=200)
    assert picks["dass"] == 2 and picks["proxy"] == 3  # the best of the eligible b, c, d (a is over the cap)
    assert picks["random"] in (1, 3) and picks["random"] != picks["dass"]
    with pytest.raises(ValueError, match=r"--max-flops 50: 0 of 4 candidates are under the cap"):
        search.choose(["a", "b", "c", "d"], predicted, proxy, flops, max_flops=50)


def test_dass_search_cli_picks_trains_reports_and_resumes(files, capsys):
    root, teacher = files
    archs = sample_architectures(10, seed=0, space=SPACE)
    names = [SPACE.to_string(torch.as_tensor(a)) for a in archs]
    flops = search.student_costs(teacher, names, {"width_divisor": 8})["flops"]
    cap = float(flops.median())
    out = root / "search.json"
    argv = ["dass", "search", "--model", str(root / "dass.pt"), "--teacher", str(root / "t.pt"), "--archs", "10",
            "--max-flops", str(cap), "--seeds", "2", "--epochs", "1", "--batch-size", "32", "--quiet", "--out",
            str(out)]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    eligible = [k for k in range(10) if float(flops[k]) <= cap]
    assert report["candidates"] == 10 and report["eligible"] == len(eligible) and report["seeds"] == [0, 1]
    picks = report["picks"]
    assert set(picks) == {"dass", "random", "proxy"}
    assert all(p["flops"] <= cap and p["arch"] in [names[k] for k in eligible] for p in picks.values())
    model, config = load_model(root / "dass.pt")
    _, predicted = predict_for_teacher(model, config, teacher, names)
    best = max(eligible, key=lambda k: float(predicted[k]))
    assert picks["dass"]["arch"] == names[best]
    assert picks["dass"]["predicted"] == pytest.approx(float(predicted[best]), abs=1e-4)
    proxy = search.proxy_scores(teacher, [names[k] for k in eligible], "synflow", {"width_divisor": 8})
    assert picks["proxy"]["arch"] == names[eligible[int(torch.argmax(proxy))]]
    assert picks["random"]["arch"] != picks["dass"]["arch"]
    for pick in picks.values():
        accuracy = pick["kd_valid_acc"]
        assert len(accuracy["values"]) == 2 and all(0 <= v <= 100 for v in accuracy["values"])
        assert accuracy["mean"] == pytest.approx(sum(accuracy["values"]) / 2)
    rows = list(csv.DictReader(open(root / "search.csv")))
    assert [(r["pick"], r["seed"]) for r in rows] == [(p, s) for p in ("dass", "random", "proxy") for s in "01"]
    journal = (root / "search.runs.csv").read_text().splitlines()
    distinct = len({p["arch"] for p in picks.values()})
    assert len(journal) == 1 + 2 * distinct  # a pick chosen twice is trained once
    assert "rdnas dass search:" in capsys.readouterr().out
    # resumed: every run is in the journal, nothing is trained again, the report is the same
    assert main(argv) == 0
    assert (root / "search.runs.csv").read_text().splitlines() == journal
    assert json.loads(out.read_text())["picks"] == picks
    # a journal of another recipe is refused; a cap below every candidate is a usage error
    assert main([*argv[:13], "3", *argv[14:]]) == 2  # --epochs 3
    assert "holds runs of teacher" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main([*argv[:9], str(float(flops.min()) / 2), *argv[10:-1], str(root / "low.json")])
    assert stop.value.code == 2
    assert "--max-flops" in capsys.readouterr().err and not (root / "low.json").exists()
