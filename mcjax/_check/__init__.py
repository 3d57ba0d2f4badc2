"""Checking derivatives: the registry's rules against autodiff (``verify``), and any
user-supplied derivative against references.

The package is private (``_check``) because ``mcjax.check`` is reserved for the checker
function itself; the public names are re-exported from ``mcjax``.
"""
