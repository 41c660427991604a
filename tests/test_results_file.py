"""RESULTS.md is written by the scripts: each owns one section, replaced whole on rerun."""

from bench.common import RESULTS, write_results_section
from trainers.distributed import bf16_matrix_unit


def test_a_rerun_replaces_only_its_own_section(tmp_path):
    path = tmp_path / "RESULTS.md"
    write_results_section("a", "First", "| x |\n|---|\n| 1 |", command="python -m bench.a", path=path)
    write_results_section("b", "Second", "kept", command="python -m bench.b", path=path)
    write_results_section("a", "First", "| x |\n|---|\n| 2 |", command="python -m bench.a --n 2", path=path)
    text = path.read_text()
    assert text.count("## First") == 1 and "| 2 |" in text and "| 1 |" not in text
    assert "`python -m bench.a --n 2`" in text and "kept" in text
    assert text.index("## First") < text.index("## Second")  # a rerun keeps the section's place


def test_without_a_path_tests_write_their_own_results_file_never_the_repositorys(results_file):
    before = RESULTS.read_bytes() if RESULTS.exists() else None
    write_results_section("test-only", "Test only", "| y |\n|---|\n| 3 |", command="python -m bench.t")
    assert "## Test only" in results_file.read_text()
    assert (RESULTS.read_bytes() if RESULTS.exists() else None) == before
    write_results_section("test-only", "Test only", "not written", path="")  # '' = no section
    assert "not written" not in results_file.read_text()


def test_a_section_names_the_cpus_bf16_matrix_unit_which_the_cpu_name_does_not_tell(tmp_path):
    # Virtual machines' /proc/cpuinfo texts, alike but for their flags.
    cpuinfo = "processor\t: {0}\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu sse2 avx512f{1}\n\n"
    assert bf16_matrix_unit("".join(cpuinfo.format(i, " avx512_bf16 amx_tile amx_bf16") for i in range(2))) == "amx_bf16"
    assert bf16_matrix_unit(cpuinfo.format(0, " avx512_bf16")) == "avx512_bf16"
    assert bf16_matrix_unit(cpuinfo.format(0, "")) is None
    path = tmp_path / "RESULTS.md"
    write_results_section("a", "First", "| x |", command="python -m bench.a", path=path)
    assert "bf16 matrix unit: " in path.read_text()
