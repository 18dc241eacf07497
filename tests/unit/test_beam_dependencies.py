"""A local run's Beam args keep TFX from packaging its own install for remote workers
(about 1.3 s and 50 MB per Beam component), and leave other runners' args alone."""

import apache_beam as beam
import pytest
from tfx.utils import dependency_utils

from mtrec.pipeline.local_runner import default_beam_args, without_tfx_sdist

IMAGE = f"--sdk_container_image=apache/beam_python3.11_sdk:{beam.__version__}"


@pytest.mark.parametrize(
    "args",
    [(), default_beam_args(10), default_beam_args(10**9), ("--runner=DirectRunner",)],
)
def test_direct_runner_args_name_the_default_image_so_tfx_builds_no_sdist(args, monkeypatch):
    def build() -> str:
        raise AssertionError("TFX packaged its install")

    monkeypatch.setattr(dependency_utils, "build_ephemeral_package", build)
    local = without_tfx_sdist(args)
    assert local == (*args, IMAGE)
    # TFX's own check, as each Beam executor runs it: nothing to add, nothing built.
    assert dependency_utils.make_beam_dependency_flags(list(local)) == list(local)


@pytest.mark.parametrize(
    "args",
    [
        ("--runner", "DataflowRunner", "--project=p"),
        ("--runner=PortableRunner", "--job_endpoint=embed"),
        ("--setup_file=./setup.py",),
        ("--extra_package=dist/mtrec.tar.gz",),
        ("--sdk_container_image=registry/mtrec:1",),
    ],
)
def test_other_runners_and_given_dependencies_are_left_alone(args):
    assert without_tfx_sdist(args) == args
