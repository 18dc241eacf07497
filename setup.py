"""Installs mtrec: the pipeline/, models/, components/ and serving/ packages and the CLI.

The TFX stack itself is installed by `make install` (see README: a two-step install pinned
by requirements/constraints.txt), because tfx 1.16.0's metadata caps Python below 3.11.
"""

from setuptools import find_packages, setup

setup(
    name="mtrec",
    version="0.1.0",
    description="Multi-task recommender (rating, click, purchase) as a TFX pipeline.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["pipeline*", "models*", "components*", "serving*"]),
    package_data={"pipeline": ["schema/*.pbtxt"]},
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
    ],
    entry_points={"console_scripts": ["mtrec=pipeline.cli:main"]},
)
