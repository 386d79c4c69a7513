"""Search strategies against a synthetic fitness with a known optimum."""

import pytest
import torch

from rdnas.search import SearchHistory, evolution_search, mutate, random_search
from rdnas.spaces import nb201

TARGET = torch.tensor([3, 3, 2, 1, 3, 3])


def closeness(archs):
    """Fitness: edges equal to TARGET (6 = the optimum); counts calls."""
    closeness.calls += 1
    return (archs == TARGET).sum(1).double()


closeness.calls = 0


def test_history_keeps_the_budget_and_never_evaluates_a_cell_twice():
    history = SearchHistory(closeness, budget=5)
    cells = [tuple(a) for a in nb201.all_archs()[100:108].tolist()]
    scores = history.evaluate(cells[:3] + cells[:2])
    assert len(history.archs) == 3 and scores[3:] == scores[:2]
    history.evaluate(cells)
    assert len(history.archs) == 5 and history.remaining == 0 and len(set(history.archs)) == 5
    assert history.evaluate(cells[7:8]) == [float("-inf")]
    with pytest.raises(ValueError, match="budget must be at least 1"):
        SearchHistory(closeness, 0)


def test_random_search_draws_distinct_connected_cells():
    history = random_search(closeness, 300, seed=1, batch=64)
    assert len(set(history.archs)) == 300 and all(nb201.is_connected(a) for a in history.archs)


def test_evolution_finds_the_optimum_that_random_search_misses():
    evolved = evolution_search(closeness, 400, seed=0, population=20, sample_size=5, batch=10)
    assert len(evolved.archs) == 400 and evolved.top(1)[0] == (tuple(TARGET.tolist()), 6.0)
    assert random_search(closeness, 400, seed=0).top(1)[0][1] < 6.0


def test_mutation_changes_one_edge_and_stays_connected():
    generator = torch.Generator().manual_seed(0)
    arch = (1, 0, 0, 0, 0, 1)
    for _ in range(100):
        child = mutate(arch, generator)
        assert sum(a != b for a, b in zip(arch, child)) == 1 and nb201.is_connected(child)


def test_the_supernet_fitness_recalibrates_on_the_same_batches_every_call():
    """rdnas search calls the fitness once per generation: each call must recalibrate BN on the same training
    images, or cells scored in different generations are compared under different statistics."""
    from rdnas.rank import recalibrated_accuracy_fn
    from rdnas.supernet import NB201Supernet
    from rdnas.train import TrainConfig, load_data

    data = load_data(TrainConfig(data="digits", image_size=8))
    torch.manual_seed(0)
    supernet = NB201Supernet(4, 1, data.train.num_classes, data.in_channels)
    fitness = recalibrated_accuracy_fn(supernet, data, "cpu", calibration_batch_size=16, calibration_steps=2)
    archs = nb201.all_archs()[[5, 4321, 15000]]
    first = fitness(archs)
    for _ in range(3):
        assert torch.equal(fitness(archs), first)


def test_top_ranks_nan_last_and_refuses_a_count_below_one():
    cells = [tuple(a) for a in nb201.all_archs()[[10, 20, 30]].tolist()]
    scores = {cells[0]: float("nan"), cells[1]: 0.5, cells[2]: 0.7}
    history = SearchHistory(lambda archs: torch.tensor([scores[tuple(a)] for a in archs.tolist()]), budget=3)
    history.evaluate(cells)
    assert [arch for arch, _ in history.top(3)] == [cells[2], cells[1], cells[0]]
    for k in (0, -1, 1.5):
        with pytest.raises(ValueError, match=r"SearchHistory.top: k must be a positive integer, got"):
            history.top(k)
