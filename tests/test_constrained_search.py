"""Search under cost bounds and for Pareto fronts: bounds never violated (property test, both spaces, every
strategy), fronts non-dominated and complete, impossible bounds a clear error, the journal's resume (one process and
under torchrun)."""

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rdnas.pareto import crowding_distance, hypervolume, non_dominated_sort, pareto_evolution, pareto_front
from rdnas.predictors import get_predictor
from rdnas.predictors.sampling_search import sampling_search
from rdnas.search import (CostConstraint, InfeasibleConstraint, SearchHistory, SearchJournal, evolution_search,
                          random_search)
from rdnas.spaces import get_space, nb201
from spawning import free_port

NB201_FLOPS = get_space("nb201").cost(nb201.all_archs())["flops"]
RESNET = get_space("resnet48")
RESNET_SMALLEST = float(RESNET.cost(RESNET.smallest().unsqueeze(0))["flops"][0])
RESNET_LARGEST = float(RESNET.cost(RESNET.largest().unsqueeze(0))["flops"][0])


def checked_fitness(space, maximum=None, minimum=None):
    """A fitness that fails the test if it is ever asked about an architecture outside the bounds (computed here
    from space.cost, not through CostConstraint); its value: the sum of the code."""
    space = get_space(space)

    def fitness(archs):
        costs = space.cost(archs)
        for name, bound in (maximum or {}).items():
            assert bool((costs[name] <= bound).all()), f"{name} above {bound} evaluated"
        for name, bound in (minimum or {}).items():
            assert bool((costs[name] >= bound).all()), f"{name} below {bound} evaluated"
        fitness.calls += 1
        return archs.sum(1).double()

    fitness.calls = 0
    return fitness


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**16), percentile=st.floats(0.2, 100.0),
       strategy=st.sampled_from(["random", "evolution", "pareto"]))
def test_nb201_searches_never_evaluate_a_cell_above_the_cap(seed, percentile, strategy):
    cap = float(torch.quantile(NB201_FLOPS, percentile / 100))
    constraint = CostConstraint("nb201", maximum={"flops": cap})
    fitness = checked_fitness("nb201", maximum={"flops": cap})
    if strategy == "random":
        history = random_search(fitness, 60, seed=seed, batch=16, constraint=constraint)
    elif strategy == "evolution":
        history = evolution_search(fitness, 60, seed=seed, population=10, sample_size=4, batch=5,
                                   constraint=constraint)
    else:
        history = pareto_evolution(fitness, 60, seed=seed, population=10, batch=5, constraint=constraint)
    inside = int(((NB201_FLOPS <= cap) & nb201.connected(nb201.all_archs())).sum())
    assert len(history.archs) == min(60, inside) and fitness.calls > 0


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**16), fraction=st.floats(0.02, 0.6), lower=st.booleans(),
       strategy=st.sampled_from(["random", "evolution"]))
def test_resnet48_searches_keep_inside_flops_bounds(seed, fraction, lower, strategy):
    """Caps from just above the smallest network up; with lower, a band [cap / 1.3, cap]."""
    cap = RESNET_SMALLEST + fraction * (RESNET_LARGEST - RESNET_SMALLEST)
    minimum = {"flops": cap / 1.3} if lower else None
    constraint = CostConstraint("resnet48", minimum=minimum, maximum={"flops": cap})
    fitness = checked_fitness("resnet48", maximum={"flops": cap}, minimum=minimum)
    if strategy == "random":
        history = random_search(fitness, 24, seed=seed, batch=8, space="resnet48", constraint=constraint)
    else:
        history = evolution_search(fitness, 24, seed=seed, population=8, sample_size=4, batch=4, space="resnet48",
                                   constraint=constraint)
    assert len(history.archs) == 24 and len(set(history.archs)) == 24


@pytest.mark.parametrize("space, maximum", [("nb201", {"flops": 4e7, "params": 4e5}),
                                            ("resnet48", {"flops": RESNET_SMALLEST * 1.05})])
def test_sampling_search_queries_only_cells_inside_the_bounds(space, maximum):
    constraint = CostConstraint(space, maximum=maximum)
    fitness = checked_fitness(space, maximum=maximum)
    history = sampling_search(fitness, 30, lambda: get_predictor("gbt")(space=space, seed=0), seed=1,
                              pool=600, candidates=200, space=space, constraint=constraint)
    assert len(history.archs) == 30 and bool(constraint.admits(torch.tensor(history.archs)).all())


def test_the_history_refuses_to_evaluate_a_cell_outside_the_bounds():
    constraint = CostConstraint("nb201", maximum={"flops": 3e7})
    history = SearchHistory(lambda a: a.sum(1).double(), 5, constraint)
    big = tuple(nb201.SPACE.largest().tolist())
    with pytest.raises(ValueError, match=r"\|nor_conv_3x3~0\|.* is outside the constraint flops <= 3e\+07"):
        history.evaluate([big])


# ------------------------------------------------------------------------------------------------ impossible bounds


def test_an_impossible_nb201_bound_names_the_smallest_reachable_cost_exactly():
    smallest = float(NB201_FLOPS[nb201.connected(nb201.all_archs())].min())
    with pytest.raises(InfeasibleConstraint, match=rf"no architecture of the space nb201 meets flops <= 5e\+06: the "
                       rf"smallest reachable flops is {re.escape(f'{smallest:.6g}')}"):
        random_search(lambda a: a.sum(1).double(), 10, constraint=CostConstraint("nb201", maximum={"flops": 5e6}))
    largest = float(NB201_FLOPS.max())
    with pytest.raises(InfeasibleConstraint, match=rf"the largest reachable flops is {re.escape(f'{largest:.6g}')}"):
        CostConstraint("nb201", minimum={"flops": 3e8}).check_reachable()
    # each bound reachable alone, not together: both extremes named
    with pytest.raises(InfeasibleConstraint, match=r"smallest reachable params .* largest reachable flops"):
        CostConstraint("nb201", maximum={"params": 1e5}, minimum={"flops": 2e8}).check_reachable()


def test_an_impossible_resnet48_bound_names_the_cost_of_the_smallest_network():
    with pytest.raises(InfeasibleConstraint, match=rf"resnet48 meets flops <= 9e\+08: the smallest reachable flops "
                       rf"is {re.escape(f'{RESNET_SMALLEST:.6g}')} \({RESNET.to_string(RESNET.smallest())}\)"):
        evolution_search(lambda a: a.sum(1).double(), 10, space="resnet48",
                         constraint=CostConstraint("resnet48", maximum={"flops": 9e8}))


def test_bad_bounds_are_clear_errors():
    with pytest.raises(ValueError, match="the space nb201 has no cost 'latency'"):
        CostConstraint("nb201", maximum={"latency": 1.0})
    with pytest.raises(InfeasibleConstraint, match="the minimum flops 2e\\+07 is above the maximum 1e\\+07"):
        CostConstraint("nb201", minimum={"flops": 2e7}, maximum={"flops": 1e7})
    with pytest.raises(ValueError, match="the maximum flops must be a finite number, got nan"):
        CostConstraint("nb201", maximum={"flops": float("nan")})
    domain = nb201.all_archs()[NB201_FLOPS > 1e8][:3]
    smallest = float(NB201_FLOPS[NB201_FLOPS > 1e8][:3].min())
    with pytest.raises(InfeasibleConstraint, match=rf"no architecture of the domain of 3 architectures meets flops "
                       rf"<= 5e\+07: the smallest reachable flops is {re.escape(f'{smallest:.6g}')}"):
        random_search(lambda a: a.sum(1).double(), 3, domain=domain,
                      constraint=CostConstraint("nb201", maximum={"flops": 5e7}))


def test_the_cli_reports_an_impossible_bound_and_exits_2(tmp_path):
    table = tmp_path / "scores.csv"
    archs = nb201.all_archs()
    table.write_text("index,arch_str,score\n" + "".join(f"{i},{nb201.to_string(tuple(a))},{i % 97}\n"
                                                         for i, a in enumerate(archs.tolist())))
    result = subprocess.run([sys.executable, "-m", "rdnas", "search", "--table", str(table), "--table-column",
                             "score", "--max-flops", "1e6"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert "rdnas search: error: no architecture of the space nb201 meets flops <= 1e+06: the smallest reachable " \
           "flops is 7.78305e+06" in result.stderr
    result = subprocess.run([sys.executable, "-m", "rdnas", "search", "--table", str(table), "--max-flops", "1e7"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and "--table and --table-column go together" in result.stderr


def test_the_cli_writes_the_front_under_a_cap_with_its_ground_truth_and_a_plot(tmp_path):
    table = tmp_path / "scores.csv"
    archs = nb201.all_archs()
    score = (archs == 3).sum(1) - 0.5 * (archs == 0).sum(1)
    table.write_text("index,arch_str,score\n" + "".join(f"{i},{nb201.to_string(tuple(a))},{float(s)}\n"
                                                         for i, (a, s) in enumerate(zip(archs.tolist(), score))))
    result = subprocess.run([sys.executable, "-m", "rdnas", "search", "--table", str(table), "--table-column", "score",
                             "--max-flops", "1e8", "--pareto", "flops", "--budget", "150", "--population", "16",
                             "--gt", str(table), "--column", "score", "--out", str(tmp_path / "out" / "top.json")],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (tmp_path / "out" / "front.jsonl").read_text().splitlines()]
    assert lines and all(line["cost"] <= 1e8 and line["cost_name"] == "flops" for line in lines)
    assert all(line["ground_truth"] == line["estimate"] for line in lines)  # the table is its own ground truth
    estimate, cost = [line["estimate"] for line in lines], [line["cost"] for line in lines]
    assert brute_force_front(estimate, cost) == list(range(len(lines)))  # no front line dominates another
    assert (tmp_path / "out" / "front.png").stat().st_size > 1000
    assert json.loads((tmp_path / "out" / "top.json").read_text())["front"] == len(lines)


# ------------------------------------------------------------------------------------------------------ fronts


def brute_force_front(estimate, cost) -> list[int]:
    def dominates(i, j):
        return (estimate[i] >= estimate[j] and cost[i] <= cost[j]) and (estimate[i] > estimate[j] or cost[i] < cost[j])

    return [j for j in range(len(cost)) if not any(dominates(i, j) for i in range(len(cost)))]


@settings(max_examples=40, deadline=None)
@given(points=st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=40))
def test_the_front_is_exactly_the_non_dominated_points(points):
    estimate = torch.tensor([float(e) for e, _ in points])
    cost = torch.tensor([float(c) for _, c in points])
    front = pareto_front(estimate, cost)
    assert sorted(front.tolist()) == brute_force_front(estimate.tolist(), cost.tolist())
    assert torch.equal(cost[front], torch.sort(cost[front]).values)  # in order of cost
    fronts = non_dominated_sort(estimate, cost)
    assert sorted(i for f in fronts for i in f.tolist()) == list(range(len(points)))
    for later, earlier in zip(fronts[1:], fronts):  # every point of a later front is dominated by an earlier one
        for j in later.tolist():
            assert any(estimate[i] >= estimate[j] and cost[i] <= cost[j] for i in earlier.tolist())


def test_crowding_and_hypervolume_on_a_hand_computed_front():
    estimate, cost = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 2.0, 4.0])
    assert crowding_distance(estimate, cost).tolist() == [float("inf"), 2.0, float("inf")]
    # boxes [1,5]x[0,1] U [2,5]x[0,2] U [4,5]x[0,4]: 1*1 + 2*2 + 1*4
    assert hypervolume(estimate, cost, (0.0, 5.0)) == 9.0
    assert hypervolume(torch.tensor([1.0, 0.5]), torch.tensor([1.0, 2.0]), (0.0, 5.0)) == 4.0  # dominated adds 0


def test_pareto_evolution_over_a_small_enumerated_domain_finds_the_whole_front():
    """A domain of 120 cells and a budget that covers it: the front of what was evaluated is the true front; with
    half the budget, every front point found is truly non-dominated among what was evaluated."""
    domain = nb201.all_archs()[torch.randperm(nb201.NUM_ARCHS, generator=torch.Generator().manual_seed(4))[:150]]
    domain = domain[nb201.connected(domain)][:120]
    score = {tuple(a): a.count(3) - 0.3 * a.count(0) for a in domain.tolist()}
    flops = dict(zip(score, NB201_FLOPS[nb201.SPACE.index(domain)].tolist()))
    true = brute_force_front([score[a] for a in score], [flops[a] for a in score])
    true_archs = {list(score)[i] for i in true}

    def fitness(archs):
        return torch.tensor([score[tuple(a)] for a in archs.tolist()], dtype=torch.float64)

    history = pareto_evolution(fitness, 120, seed=0, population=16, batch=8, domain=domain)
    assert len(history.archs) == 120 and set(history.archs) == set(score)
    found = pareto_front(torch.tensor(history.scores), torch.tensor([flops[a] for a in history.archs]))
    assert {history.archs[i] for i in found.tolist()} == true_archs
    half = pareto_evolution(fitness, 60, seed=0, population=16, batch=8, domain=domain)
    assert len(half.archs) == 60 and set(half.archs) <= set(score)


# ------------------------------------------------------------------------------------------------------ resume


def test_a_search_resumed_from_a_truncated_journal_repeats_the_uninterrupted_one(tmp_path):
    constraint = CostConstraint("nb201", maximum={"flops": 6e7})
    settings_ = {"strategy": "evolution", "seed": 2}
    full = evolution_search(checked_fitness("nb201"), 80, seed=2, population=10, sample_size=4, batch=5,
                            constraint=constraint, journal=SearchJournal(tmp_path / "j.jsonl", settings_))
    lines = (tmp_path / "j.jsonl").read_text().splitlines()
    assert len(lines) == 81
    (tmp_path / "j.jsonl").write_text("\n".join(lines[:31]) + "\n")  # interrupted after 30 evaluations
    fitness = checked_fitness("nb201")
    resumed = evolution_search(fitness, 80, seed=2, population=10, sample_size=4, batch=5, constraint=constraint,
                               journal=SearchJournal(tmp_path / "j.jsonl", settings_))
    assert resumed.archs == full.archs and resumed.scores == full.scores and resumed.replayed == 30
    assert len((tmp_path / "j.jsonl").read_text().splitlines()) == 81
    with pytest.raises(ValueError, match=r"records another search \(seed: 2 there, 3 now\)"):
        SearchJournal(tmp_path / "j.jsonl", {"strategy": "evolution", "seed": 3})


def test_torchrun_search_resumes_from_its_journal_and_matches_one_process(tmp_path):
    """A supernet search with a FLOPs cap under torchrun (2 ranks), interrupted (its journal cut to 10 of 24
    evaluations) and started again, ends with the cells and scores of the same search in one process."""
    from rdnas import distributed
    from rdnas.train import OneShotTrainer, TrainConfig

    run = tmp_path / "run"
    OneShotTrainer(TrainConfig(data="digits", image_size=8, channels=4, cells_per_stage=1, epochs=1,
                               batch_size=128, out_dir=str(run)), progress=False).fit()
    root = Path(distributed.__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    args = ["search", "--checkpoint", str(run / "checkpoint.pt"), "--budget", "24", "--population", "8",
            "--subnets-per-pass", "8", "--max-flops", "8e7", "--top-k", "24"]

    def search(out, processes):
        launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                     "127.0.0.1", "--master_port", str(free_port()), "-m", "rdnas"] if processes == 2
                    else [sys.executable, "-m", "rdnas"])
        with tempfile.TemporaryDirectory() as outside:
            result = subprocess.run([*launcher, *args, "--journal", str(out / "journal.jsonl"), "--out",
                                     str(out / "top.json")], capture_output=True, text=True, timeout=300, env=env,
                                    cwd=outside)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads((out / "top.json").read_text())["top"], result.stdout

    one, _ = search(tmp_path / "one", 1)
    two, _ = search(tmp_path / "two", 2)
    journal = tmp_path / "two" / "journal.jsonl"
    journal.write_text("\n".join(journal.read_text().splitlines()[:11]) + "\n")
    resumed, stdout = search(tmp_path / "two", 2)
    assert "(10 replayed from" in stdout and stdout.count("rdnas search:") == 1
    flops = get_space("nb201").cost(torch.stack([nb201.SPACE.from_string(r["arch"]) for r in one]))["flops"]
    assert bool((flops <= 8e7).all()) and len(one) == 24
    for rows in (two, resumed):
        assert [r["arch"] for r in rows] == [r["arch"] for r in one]
        assert [r["supernet_accuracy"] for r in rows] == pytest.approx([r["supernet_accuracy"] for r in one],
                                                                       abs=1e-6)
