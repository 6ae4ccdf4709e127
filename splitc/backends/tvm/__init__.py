"""The TVM backend: the edge and cloud halves as TVM (Relax) shared libraries.

Needs the optional extra ``pip install 'splitc[tvm]'`` (apache-tvm 0.27). Edge
devices get cross-compiled aarch64 builds (``targets.py``); the cloud gets CUDA
or this host's CPU. Each half is imported with ``tvm.relax.frontend.onnx``,
compiled with a Relax pipeline (``pipeline.py``) and linked with
``export_library`` into ``edge.so`` / ``cloud.so``, weights embedded. The
runtime side is ``splitc.runtime.tvm_half``.

Nothing here imports TVM until it is used.
"""

from splitc.backends.tvm.errors import (
    TVMBuildError,
    TVMNotInstalled,
    TVMTargetError,
    TVMWarning,
    UnsupportedOpsError,
)

__all__ = ["TVMBuildError", "TVMNotInstalled", "TVMTargetError", "TVMWarning", "UnsupportedOpsError",
           "write_tvm_halves"]


def write_tvm_halves(split, out, fallback=None, pipeline="splitc", warn=None, targets=None):
    """Build ``split``'s halves into the directory ``out``; see ``save.write_tvm_halves``."""
    from splitc.backends.tvm.build import default_warn
    from splitc.backends.tvm.save import write_tvm_halves as write

    return write(split, out, fallback, pipeline, warn or default_warn, targets)
