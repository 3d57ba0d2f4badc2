"""Hypothesis strategies for property tests of derivatives, in your own test suite.

Each strategy draws the arguments of a function: sizes for its symbolic dimensions (each
independently, from 1, so size 1 and non-square shapes come up, and hypothesis shrinks a
failure towards the smallest), then values.

- ``mcjax.testing.rule_arguments``: valid arguments of a registered rule, values from the rule's own
  sampler (``mcjax.registry.Rule.example``: positive where a logarithm needs it, off the kinks,
  integer labels, parameter pytrees);
- ``mcjax.testing.shaped_arrays``: arrays of given symbolic shapes (``"W: m n, x: n"``), values drawn
  by hypothesis itself;
- ``mcjax.testing.dimensions``: the sizes alone.

Example::

    from hypothesis import given, settings
    import mcjax, mcjax.testing

    @settings(max_examples=20, deadline=None)
    @given(mcjax.testing.rule_arguments("affine"))
    def test_affine_derivative(args):
        mcjax.assert_derivative(mcjax.affine, mcjax.derivative("affine", "W"), *args,
                                argnums=0)

hypothesis is an optional dependency of mcjax (``pip install hypothesis``, or the ``test``
extra): it is imported when a strategy is made, not when this module is.  Every new shape
compiles the functions under test again, so keep ``max_size`` and ``max_examples`` small.
A ``float64`` draw needs ``jax.config.update("jax_enable_x64", True)``.
"""

from mcjax._check._strategies import MIN_SIZES, dimensions, rule_arguments, shaped_arrays

__all__ = ["rule_arguments", "shaped_arrays", "dimensions", "MIN_SIZES"]
