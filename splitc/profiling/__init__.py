"""Measured latency: ``splitc profile``, profile files, segment-aware prediction, the calibrated roofline.

    from splitc.profiling import profile_model, load_profile
    document = profile_model("model.onnx", runs=50, threads=1)   # measure here

See docs/latency-model.md. Submodules are imported lazily, so the cost-model
code that imports this package stays light.
"""

__all__ = ["profile_model", "load_profile", "ProfileCostModel", "ProfileError"]


def __getattr__(name: str):
    if name == "profile_model":
        from splitc.profiling.measure import profile_model

        return profile_model
    if name in ("load_profile", "ProfileError"):
        from splitc.cost import schema

        return getattr(schema, name)
    if name == "ProfileCostModel":
        from splitc.cost.profile import ProfileCostModel

        return ProfileCostModel
    raise AttributeError(f"module 'splitc.profiling' has no attribute {name!r}")
