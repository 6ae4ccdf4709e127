"""splitc: a compiler for split edge-cloud neural-network inference.

    import splitc
    split = splitc.compile("model.onnx", target="jetson-tx2", bandwidth="5Mbps")
    split.save("out/")

The compiler is imported lazily, so ``import splitc.runtime`` stays light.
"""

from splitc._version import __version__

__all__ = ["compile", "analyse", "CompiledSplit", "Analysis", "CompileOptions", "__version__"]


def __getattr__(name: str):
    if name in ("compile", "analyse", "CompiledSplit", "Analysis"):
        from splitc import api

        return getattr(api, name)
    if name == "CompileOptions":
        from splitc.options import CompileOptions

        return CompileOptions
    raise AttributeError(f"module 'splitc' has no attribute {name!r}")
