"""RESULTS.md is written by the scripts: each owns one section, replaced whole on rerun."""

from bench.common import write_results_section


def test_a_rerun_replaces_only_its_own_section(tmp_path):
    path = tmp_path / "RESULTS.md"
    write_results_section("a", "First", "| x |\n|---|\n| 1 |", command="python -m bench.a", path=path)
    write_results_section("b", "Second", "kept", command="python -m bench.b", path=path)
    write_results_section("a", "First", "| x |\n|---|\n| 2 |", command="python -m bench.a --n 2", path=path)
    text = path.read_text()
    assert text.count("## First") == 1 and "| 2 |" in text and "| 1 |" not in text
    assert "`python -m bench.a --n 2`" in text and "kept" in text
    assert text.index("## First") < text.index("## Second")  # a rerun keeps the section's place
