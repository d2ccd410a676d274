"""Installs the testbed packages and the `testbed` and `qtp` console scripts.

Versions are pinned in requirements.txt only; this file reads the runtime part of it.
"""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def runtime_requirements() -> list[str]:
    """Pinned runtime requirements: requirements.txt up to its '# development' marker."""
    reqs = []
    for line in (HERE / "requirements.txt").read_text().splitlines():
        if line.strip().startswith("# development"):
            break
        line = line.split("#", 1)[0].strip()
        if line:
            reqs.append(line)
    return reqs


setup(
    name="compute-hub-testbed",
    version="0.1.0",
    description="Network emulation and benchmarking testbed for interconnected compute hubs",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["testbed*", "protocols*", "topologies*", "experiments*", "bench*"]),
    package_data={
        "topologies": ["*.yaml", "*.md"],
        "experiments": ["*.yaml", "*.md"],
        "testbed": ["report/*.css", "report/*.html", "emulator/*.md"],
    },
    install_requires=runtime_requirements(),
    entry_points={
        "console_scripts": [
            "testbed=testbed.cli:main",
            "qtp=protocols.qtp.cli:main",
        ]
    },
)
