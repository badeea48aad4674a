"""The project's promises about itself: the README's two commands, and CI running the second."""

import re

from conftest import REPO


def readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", (REPO / "README.md").read_text())[:2]


def test_readme_opens_with_the_main_job_then_the_tests():
    main_job, tests = readme_commands()
    assert main_job.startswith("python3 -m venv") and "pip install torch==2.13.0" in main_job and main_job.endswith("genlab train")
    assert "pip install torch==2.13.0" in tests and '".[test]"' in tests and tests.endswith("python -m pytest")
    # torch first, so the project's torch>=2.4 is already satisfied by the CPU build
    assert tests.index("torch==2.13.0") < tests.index('".[test]"')


def test_ci_runs_exactly_the_readme_test_command():
    _, tests = readme_commands()
    ci = (REPO / ".ci" / "run").read_text()
    assert tests in ci.splitlines()


def test_the_package_never_pins_torch_or_needs_torchvision():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"torch>=2.4"' in pyproject and "torchvision" not in pyproject
