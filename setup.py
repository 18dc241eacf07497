"""Installs the one package ``mtrec``: its core in mtrec/, and the repo's fixed top-level
folders mapped under it (pipeline/ is mtrec.pipeline, models/ is mtrec.models, ...).

Nothing else lands at the top level of site-packages. The TFX stack itself is installed by
`make install` (README: a two-step install pinned by requirements/constraints.txt), because
tfx 1.16.0's metadata caps Python below 3.11.
"""

from setuptools import find_packages, setup

# The repo's top-level folders, each installed as a subpackage of mtrec (as keras-rs maps its
# folders with package-dir).
MAPPED = ("pipeline", "models", "components", "serving")


def _packages() -> tuple[list[str], dict[str, str]]:
    """Every package under mtrec/ plus each mapped folder's packages, renamed under mtrec."""
    packages = ["mtrec", *(f"mtrec.{p}" for p in find_packages("mtrec"))]
    package_dir = {"mtrec": "mtrec"}
    for folder in MAPPED:
        for sub in [folder, *(f"{folder}.{p}" for p in find_packages(folder))]:
            packages.append(f"mtrec.{sub}")
            package_dir[f"mtrec.{sub}"] = sub.replace(".", "/")
    return packages, package_dir


PACKAGES, PACKAGE_DIR = _packages()

setup(
    name="mtrec",
    version="0.1.0",
    description="Multi-task recommender (rating, click, purchase) as a TFX pipeline.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    package_data={"mtrec.data": ["schema/*.pbtxt"]},
    install_requires=[
        # Held at the versions in requirements/constraints.txt by `make install`.
        "tensorflow>=2.16,<2.17",
        "tf-keras~=2.16.0",
        "tensorflow-recommenders==0.7.3",
        "tensorflow-transform>=1.16,<1.17",
        "tensorflow-model-analysis>=0.47,<0.48",
        "tensorflow-serving-api>=2.16,<2.17",
        "pandas",
        "pyarrow",
        "google-crc32c",  # TFRecord checksums in the data component (also a Beam GCP dep).
    ],
    entry_points={"console_scripts": ["mtrec=mtrec.cli.main:main"]},
)
