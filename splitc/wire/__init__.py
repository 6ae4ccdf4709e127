"""The wire: the cut-tensor codec (``codec``) and the request/response container (``request``).

It sits beside the compiler and the runtime and imports neither: both use it, and so can any app that
embeds splitc's artifacts. The byte formats are specified in ``docs/wire-format.md``.
"""
