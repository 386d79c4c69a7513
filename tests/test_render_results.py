"""benchmarks/render_results.py: the speed-up columns that README figures come from."""

import importlib.util
import json
from pathlib import Path

import pytest

RENDERER = Path(__file__).resolve().parents[1] / "benchmarks" / "render_results.py"


@pytest.fixture(scope="module")
def renderer():
    spec = importlib.util.spec_from_file_location("render_results", RENDERER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def bench(name, median, role, **extra):
    return {"name": name, "group": "g", "stats": {"median": median, "iqr": 0.0, "rounds": 5, "iterations": 1},
            "extra_info": {"label": name, "role": role, **extra}}


def table_rows(markdown: str) -> dict[str, list[str]]:
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| implementation"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0].strip("*")] = cells
    return rows


def render(renderer, tmp_path, benchmarks) -> str:
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"benchmarks": benchmarks}))
    return renderer.render(path)


def test_speed_up_is_the_ratio_of_medians(renderer, tmp_path):
    rows = table_rows(render(renderer, tmp_path, [bench("ours", 1.0, "candidate"), bench("theirs", 3.0, "baseline")]))
    assert rows["ours"][-2] == "3.00x" and rows["theirs"][-2] == "1.00x"
    assert "sample" not in render(renderer, tmp_path, [bench("ours", 1.0, "candidate")])


def test_projected_groups_compare_whole_space_projections(renderer, tmp_path):
    # ours: 2 s for 32 of 9,444 plans -> 590 s; theirs: 3 s for 32 of 15,625 cells -> 1,465 s: 2.48x, not 1.5x
    markdown = render(renderer, tmp_path, [
        bench("ours", 2.0, "candidate", whole_space_scale=9444 / 32, sample="32 plans"),
        bench("theirs", 3.0, "baseline", whole_space_scale=15625 / 32, sample="32 cells")])
    rows = table_rows(markdown)
    assert rows["ours"][4:7] == ["32 plans", "9.8 min", f"{(3.0 * 15625) / (2.0 * 9444):.2f}x"]
    assert rows["theirs"][5] == "24.4 min"
