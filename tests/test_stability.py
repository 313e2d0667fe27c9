"""The stability proof (benchmarks/stability.py) on a tiny size: passes run, checks compared, table written."""

import json

import pytest

from benchmarks import stability


@pytest.mark.slow
def test_two_passes_of_the_smoke_depth_study_give_identical_checks(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{stability.BEGIN}\nold table\n{stability.END}\noutro\n")
    out = tmp_path / "stability.json"
    assert (
        stability.main(
            [
                "--size",
                "smoke",
                "--repeats",
                "1",
                "--jobs",
                "1,2",
                "--studies",
                "depth",
                "--out",
                str(out),
                "--readme",
                str(readme),
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())["studies"]["depth"]
    assert len(result["passes"]) == 2 and all("checks" in p for p in result["passes"])
    assert result["identical"] is True  # same seeds, same numbers: n_jobs must not change a verdict
    text = readme.read_text()
    assert "old table" not in text and "| `depth` |" in text and text.endswith("outro\n")


def test_a_differing_check_is_reported():
    passes = [
        {"verdict": "supported", "checks": {"a": "holds", "b": "holds"}},
        {"verdict": "partly supported", "checks": {"a": "holds", "b": "fails"}},
    ]
    assert stability.compare(passes) == {"identical": False, "differing_checks": ["b"], "failed_passes": 0}
    assert stability.compare(passes[:1] * 2)["identical"] is True


def test_merge_keeps_the_other_studies_and_refuses_other_settings():
    old = {"size": "default", "repeats": 2, "jobs": [1, 2], "studies": {"depth": {"x": 1}, "init": {"x": 2}}}
    new = {"size": "default", "repeats": 2, "jobs": [1, 2], "studies": {"depth": {"x": 3}}}
    old["date"] = "earlier"
    assert stability.merge(old, new)["studies"] == {"depth": {"x": 3}, "init": {"date": "earlier", "x": 2}}
    with pytest.raises(SystemExit, match="another size"):
        stability.merge({**old, "size": "smoke"}, new)
