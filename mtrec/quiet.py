"""Hide TensorFlow 2.16's harmless teardown errors, in this process and the ones it starts.

When a process that ran tf.functions exits, TF 2.16's ``AtomicFunction.__del__`` can run after
the interpreter has cleared its module's globals; each call then raises ``TypeError: 'NoneType'
object is not subscriptable``, which Python prints as an "Exception ignored in" traceback. They
mean nothing, and every Beam SDK worker that loaded a TF graph (Transform's and the Evaluator's,
one per core under the DirectRunner) prints about twenty as it exits. Those workers are fresh
interpreters, so a hook set in the CLI's process does not reach them.

``install()`` sets the hook here and marks the environment (which the workers inherit). Beam
workers import this module before running anything when the pipeline options carry
``BEAM_PLUGIN`` (``--beam_plugin=mtrec.quiet``); that import sets the hook only in a process
whose environment is marked, so importing this module anywhere else changes nothing.
"""

from __future__ import annotations

import os
import sys

ENV_MARK = "MTREC_HIDE_TF_TEARDOWN"
BEAM_PLUGIN = f"--beam_plugin={__name__}"


def hide_tf_function_teardown(
    unraisable: sys.UnraisableHookArgs, _report=sys.__unraisablehook__
) -> None:
    """``sys.unraisablehook``: drop AtomicFunction.__del__'s TypeErrors, report the rest.

    It runs while the interpreter tears down, when module globals may already be None, so it
    uses only builtins and its own default argument.
    """
    if unraisable.exc_type is TypeError and "AtomicFunction.__del__" in repr(unraisable.object):
        return
    _report(unraisable)


def install() -> None:
    """Hide the teardown errors in this process and in the processes it starts from now on."""
    os.environ[ENV_MARK] = "1"
    sys.unraisablehook = hide_tf_function_teardown


def with_beam_plugin(beam_args: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Beam pipeline args that make each SDK worker import this module first (once)."""
    return tuple(beam_args) if BEAM_PLUGIN in beam_args else (*beam_args, BEAM_PLUGIN)


# A Beam SDK worker imports this module as a plugin: hide the errors there too when the process
# that started the pipeline asked for it.
if os.environ.get(ENV_MARK) == "1":
    sys.unraisablehook = hide_tf_function_teardown
