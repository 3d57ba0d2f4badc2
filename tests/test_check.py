"""mcjax.check on small problems: verdicts, errors, kinks, layouts, pytrees, reports."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mcjax
from mcjax.conventions import check_rtol

W = jnp.asarray(np.random.default_rng(1).standard_normal((3, 4)))
X = jnp.asarray(np.random.default_rng(2).standard_normal(4))


def f(x):
    return jnp.tanh(W.astype(x.dtype) @ x)


def df(x):
    return (1 - f(x) ** 2)[:, None] * W.astype(x.dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_right_jacobian_passes_every_reference_and_taylor(dtype):
    r = mcjax.check(f, df, X.astype(dtype))
    assert r.ok, r
    assert [c.reference for c in r.comparisons] == ["jax.jacfwd", "jax.jacrev", "finite differences"]
    assert 1.8 < r.taylor.order < 2.3
    assert r.threshold.rtol == check_rtol(dtype, 4)
    assert "float64" in r.threshold.reference  # finite differences in float64 for float32 too
    assert str(r).startswith("mcjax.check: ok")


def test_a_wrong_jacobian_fails_with_taylor_order_one_and_a_table():
    r = mcjax.check(f, lambda x: 1.01 * df(x), X)
    assert not r.ok
    assert 0.8 < r.taylor.order < 1.3 and not r.taylor.ok
    text = str(r)
    assert "worst entries" in text and "expected" in text and "diagnosis" in text
    assert r.worst[0].error > r.worst[0].allowed


def test_assert_derivative_raises_an_assertion_error_carrying_the_report():
    mcjax.assert_derivative(f, df, X)
    with pytest.raises(AssertionError) as info:
        mcjax.assert_derivative(f, lambda x: -df(x), X)
    assert isinstance(info.value, mcjax.DerivativeError)
    assert not info.value.report.ok
    first, *rest = str(info.value).splitlines()
    # the diagnosis first, so that pytest's 80-column summary line shows it; then the report
    assert first.startswith("a constant factor: matches the reference times -1: the sign is "
                            "flipped"), first
    assert first.endswith("(d f / d x)") and rest[0].startswith("mcjax.check: FAIL")
    with pytest.raises(mcjax.DerivativeError, match=r"^NaN or Inf at 12 entries where"):
        mcjax.assert_derivative(f, lambda x: df(x) * jnp.nan, X)  # no slip: the problem first


def test_structured_jacobians_vjp_functions_and_pytrees_are_accepted():
    x = X[:3]
    assert mcjax.check(jnp.sin, lambda x: mcjax.Diagonal(jnp.cos(x)), x).ok
    assert mcjax.check(f, lambda x: (lambda u: u @ df(x)), X).ok  # a VJP function
    assert mcjax.check(f, lambda x: jax.vjp(f, x)[1], X).ok  # jax.vjp's pullback (a 1-tuple)

    def g(p, labels, flag):  # pytree argument, integer labels, a Python flag
        z = p["a"] * jnp.sum(p["b"]) if flag else p["a"]
        return jnp.sum(z[labels])

    p = {"a": X, "b": X[:2]}
    labels = jnp.array([0, 2, 2])
    assert mcjax.check(g, jax.grad(g), p, labels, True).ok
    wrong = lambda p, labels, flag: {"a": jax.grad(g)(p, labels, flag)["a"], "b": 0 * p["b"]}  # noqa: E731
    assert not mcjax.check(g, wrong, p, labels, True).ok

    def h(x):  # pytree output
        return {"s": jnp.sum(x), "v": 2 * x}

    good = lambda x: {"s": jnp.ones_like(x), "v": 2 * jnp.eye(x.size)}  # noqa: E731
    assert mcjax.check(h, good, X).ok
    assert not mcjax.check(h, lambda x: {"s": jnp.ones_like(x), "v": jnp.eye(x.size)}, X).ok


@jax.numpy_dtype_promotion("standard")  # jax.jacfwd of a mixed-dtype pytree promotes
def test_fast_mode_takes_pytrees_in_and_out_of_mixed_dtypes():
    """Fast mode keeps every leaf in its own shape and dtype (nothing is laid end to end)."""
    def h(p):
        return {"s": jnp.sum(p["a"]).astype(jnp.float32) * p["b"][0], "v": 2 * p["a"]}

    p = {"a": X, "b": X[:2].astype(jnp.float32)}
    r = mcjax.check(h, jax.jacfwd(h), p, mode="fast")
    assert r.ok and r.mode == "fast" and r.dtype == "float32", r
    assert mcjax.check(h, lambda p: jax.vjp(h, p)[1], p, mode="fast").ok
    slipped = lambda p: jax.tree_util.tree_map(lambda J: 1.001 * J, jax.jacfwd(h)(p))  # noqa: E731
    assert not mcjax.check(h, slipped, p, mode="fast").ok


def test_denominator_layout_and_the_layout_helpers():
    r = mcjax.check(f, lambda x: df(x).T, X, layout="denominator")
    assert r.ok, r
    J = df(X)
    assert mcjax.conventions.to_denominator(J, out_ndim=1).shape == (4, 3)
    np.testing.assert_array_equal(mcjax.conventions.to_numerator(mcjax.conventions.to_denominator(J, 1), 1), J)
    D = mcjax.Diagonal(X)
    np.testing.assert_array_equal(mcjax.conventions.to_denominator(D), D.dense().T)


def test_shape_mismatches_name_the_shapes_and_the_layout():
    with pytest.raises(mcjax.ShapeError, match=r"shape \(4, 3\).*\(3, 4\).*denominator layout"):
        mcjax.check(f, lambda x: df(x).T, X)
    with pytest.raises(mcjax.ShapeError, match=r"a vector of the argument's shape.*Diagonal"):
        mcjax.check(jnp.sin, jnp.cos, X)
    with pytest.raises(mcjax.ShapeError, match=r"VJP function returned shape \(3,\)"):
        mcjax.check(f, lambda x: (lambda u: u), X)


def test_empty_integer_and_bad_options_are_refused_with_sentences():
    with pytest.raises(mcjax.ShapeError, match=r"args\[0\] is empty \(shape \(0,\)\)"):
        mcjax.check(jnp.sin, lambda x: mcjax.Diagonal(jnp.cos(x)), jnp.zeros(0))
    with pytest.raises(mcjax.DtypeError, match=r"args\[0\], which has dtype int32"):
        mcjax.check(jnp.sin, jnp.cos, jnp.arange(3, dtype=jnp.int32))
    with pytest.raises(ValueError, match="argnums=3"):
        mcjax.check(f, df, X, argnums=3)
    with pytest.raises(ValueError, match="kink_convention='up'"):
        mcjax.check(f, df, X, kink_convention="up")


def loss(W, x, b):
    return jnp.sum(jnp.tanh(W @ x + b))


def d_loss(W, x, b):  # with respect to (W, b): a tuple, as jax.jacrev(loss, (0, 2)) returns
    g = 1 - jnp.tanh(W @ x + b) ** 2
    return jnp.outer(g, x), g


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_argnums_takes_a_tuple_as_jax_grad_does_and_the_report_names_each_argument(mode):
    b = jnp.zeros(3)
    r = mcjax.check(loss, d_loss, W, X, b, argnums=(0, 2), mode=mode)
    assert r.ok and r.wrt == "(W, b)", r
    assert r.shapes == "f: W (3, 4), b (3,) -> shape ()"
    assert mcjax.check(loss, lambda *a: jax.jacrev(loss, (0, 2))(*a), W, X, b,
                       argnums=(0, -1), mode=mode).ok
    wrong = mcjax.check(loss, lambda *a: (d_loss(*a)[0], 2 * d_loss(*a)[1]), W, X, b,
                        argnums=(0, 2), mode=mode)
    assert not wrong.ok and all(e.label.startswith("b[") for e in wrong.worst), wrong
    if mode == "full":
        # the sentences name the argument as f does
        assert wrong.where == ("3 of 3 entries of d out / d b are wrong",)
        assert wrong.diagnosis[0].startswith("a constant factor on b only"), wrong.diagnosis
    with pytest.raises(mcjax.ShapeError, match="jax.jacfwd's structure"):
        mcjax.check(loss, lambda *a: d_loss(*a)[0], W, X, b, argnums=(0, 2))


# -- the report names what f names ---------------------------------------------------------------
def mlp_loss(params, X):
    return jnp.sum(jnp.tanh(X @ params["W1"] + params["b1"][None, :]) ** 2)


def one_entry_off(params, X):  # jax.grad, off at params['W1'][2, 1] only
    g = jax.grad(mlp_loss)(params, X)
    return {**g, "W1": g["W1"].at[2, 1].multiply(3.0)}


def _every_view(r) -> str:
    """The report as text, repr, HTML (unescaped) and JSON: what a reader can see."""
    import html
    import json
    return "\n".join([str(r), repr(r), html.unescape(r._repr_html_()), json.dumps(r.as_dict())])


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_the_report_names_a_pytree_argument_and_its_leaves_as_f_does(mode):
    params = {"W1": jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float64).reshape(3, 2),
              "b1": jnp.array([0.1, -0.2], jnp.float64)}
    X = jnp.linspace(-1.0, 1.0, 12, dtype=jnp.float64).reshape(4, 3)
    r = mcjax.check(mlp_loss, one_entry_off, params, X, mode=mode)
    assert not r.ok and r.wrt == "params", r
    assert r.shapes == "f: params a pytree with ['W1'] (3, 2), ['b1'] (2,) -> shape ()", r.shapes
    assert r.worst[0].label == "params['W1'][2, 1]", r.worst
    seen = _every_view(r)
    for said in ("mlp_loss / d params by one_entry_off", "params['W1'][2, 1]"):
        assert seen.count(said) >= 3, (said, seen)  # text, repr or JSON, and the HTML
    assert "args[0]" not in seen and "x[" not in seen and "x['" not in seen, seen


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_the_report_names_the_second_argument_when_it_is_differentiated(mode):
    def layer(W, x):
        return jnp.sum(jnp.tanh(W @ x))

    W2 = jnp.linspace(-1.0, 1.0, 6, dtype=jnp.float64).reshape(2, 3)
    x = jnp.array([0.5, -1.0, 2.0], jnp.float64)
    right = lambda W, x: jax.grad(layer, 1)(W, x)  # noqa: E731
    assert mcjax.check(layer, right, W2, x, argnums=1, mode=mode).ok
    r = mcjax.check(layer, lambda W, x: right(W, x).at[1].set(0.0), W2, x, argnums=1, mode=mode)
    assert not r.ok and r.wrt == "x" and r.shapes == "f: x shape (3,) -> shape ()", r
    assert [e.label for e in r.worst] == ["x[1]"], r.worst
    assert str(r).startswith("mcjax.check: FAIL  d ") and "layer / d x by " in str(r), r
    assert "args[1]" not in _every_view(r)


def test_a_lambda_is_named_by_its_parameters_and_star_args_by_position():
    u = jnp.array([0.5, -1.0, 2.0], jnp.float64)
    v = jnp.array([1.5, 0.25, -3.0], jnp.float64)
    r = mcjax.check(lambda u, v: jnp.sum(u * v), lambda u, v: 2 * u, u, v, argnums=1)
    assert not r.ok and r.wrt == "v" and r.worst[0].label.startswith("v["), r
    assert "<lambda> / d v by " in repr(r) and "d u" not in str(r), r
    # *args gives no names: the position, as jax.grad's argnums counts it
    r = mcjax.check(lambda *a: jnp.sum(a[0] * a[1]), lambda *a: 2 * a[0], u, v, argnums=1)
    assert not r.ok and r.wrt == "args[1]" and r.worst[0].label.startswith("args[1]["), r
    two = mcjax.check(lambda *a: jnp.sum(a[0] * a[1]), lambda *a: (a[1], 2 * a[0]), u, v,
                      argnums=(0, 1))
    assert two.wrt == "(args[0], args[1])" and two.shapes.startswith("f: args[0] (3,), args[1]")
    assert all(e.label.startswith("args[1][") for e in two.worst), two


def sin_squared(x):
    return jnp.sin(x) ** 2


def d_sin_squared(x):  # sin(2x): right, and rounded otherwise than JAX's 2 sin(x) cos(x)
    return mcjax.Diagonal(jnp.sin(2 * x))


def test_rtol_and_atol_override_the_policy_and_the_policy_stays_the_default():
    x = jnp.linspace(0.1, 3.0, 16, dtype=jnp.float32)
    default = mcjax.check(sin_squared, d_sin_squared, x)
    assert default.ok and default.threshold.given == (), default
    tight = mcjax.check(sin_squared, d_sin_squared, x, rtol=1e-30, atol=0.0)
    assert not tight.ok and tight.threshold.rtol == 1e-30 and tight.threshold.atol == 0.0
    assert "rtol given, atol given" in str(tight)
    off = lambda x: mcjax.Diagonal(1.01 * jnp.sin(2 * x))  # noqa: E731 - 1% off
    assert not mcjax.check(sin_squared, off, x).ok  # the policy catches it
    loose = mcjax.check(sin_squared, off, x, rtol=0.05)
    assert loose.ok and loose.threshold.given == ("rtol",), loose
    assert mcjax.check(sin_squared, off, x, rtol=0.05, mode="fast").ok
    assert not mcjax.check(sin_squared, off, x, mode="fast").ok
    assert not mcjax.check(sin_squared, off, x, atol=1e-9).ok  # a floor: not a relative slack


def test_nan_or_inf_on_either_side_fails_saying_where():
    x = jnp.array([1.0, 2.0, 3.0])
    r = mcjax.check(jnp.sin, lambda x: mcjax.Diagonal(jnp.cos(x).at[1].set(jnp.nan)), x)
    assert not r.ok and any("NaN or Inf" in p and "[1, 1]" in p for p in r.problems), r
    r = mcjax.check(jnp.sqrt, lambda x: mcjax.Diagonal(0.5 / jnp.sqrt(x)), jnp.array([0.0, 1.0]))
    assert not r.ok and any("jax.jacfwd" in p and "[0, 0]" in p for p in r.problems), r


def test_a_function_that_rounds_to_float32_is_reported_honestly():
    def f32(x):
        return jnp.sin(x.astype(jnp.float32)).astype(x.dtype)

    r = mcjax.check(f32, lambda x: mcjax.Diagonal(jnp.cos(x)), jnp.array([0.3, 1.2]))
    assert r.threshold.reference.endswith("float32")
    assert any("computes in float32" in n for n in r.notes)


def test_several_points_and_the_heatmap(tmp_path):
    r = mcjax.check(f, df, X, points=3)
    assert r.ok and r.points == 3
    pytest.importorskip("matplotlib")
    bad = mcjax.check(f, lambda x: df(x) * 1.5, X)
    bad.heatmap(tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 1000
    assert bad.as_dict()["ok"] is False


def test_the_heatmap_names_the_pytree_leaves_and_its_axes(tmp_path):
    pytest.importorskip("matplotlib")
    params = {"W": W, "b": jnp.arange(3.0)}

    def layer(params, x):
        return {"h": jnp.tanh(params["W"] @ x + params["b"]), "s": jnp.sum(params["b"])}

    wrong = mcjax.check(layer, lambda p, x: jax.tree_util.tree_map(
        lambda d: 1.5 * d, jax.jacrev(layer)(p, x)), params, X)
    assert not wrong.ok
    figure = wrong.heatmap(tmp_path / "tree.png")
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["params['W'] (3, 4)", "params['b'] (3,)"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["out['h'] (3,)", "out['s'] ()"]
    assert ax.get_xlabel() == "d / d params: 2 leaves (each flat, row-major)"
    assert ax.get_ylabel() == "d out: 2 leaves (each flat, row-major)"
    assert len(ax.lines) == 2  # one line between the argument's leaves, one between the output's
    one = mcjax.check(f, lambda x: df(x) * 1.5, X).heatmap()
    assert one.axes[0].get_xlabel() == "d / d x, shape (4,) (flat, row-major)"
    assert one.axes[0].get_ylabel() == "d out, shape (3,) (flat, row-major)"


def test_the_chain_localiser_names_the_first_wrong_link():
    wrong_tanh = mcjax.Differentiable(jnp.tanh, lambda x: mcjax.Diagonal(1 - jnp.tanh(x)), name="tanh (wrong)")
    sin = mcjax.sin
    chain = mcjax.vector_chain_rule(sin, wrong_tanh, mcjax.square)
    r = mcjax.check_chain(chain, X)
    assert not r.ok
    assert "the first wrong link is tanh (wrong) (link 2 of 3" in r.diagnosis[-1], r
    assert [link.ok for _, link in r.links] == [True, False, True]
    right = mcjax.vector_chain_rule(sin, mcjax.tanh, mcjax.square)
    assert mcjax.check_chain(right, X).ok
    swapped = mcjax.Differentiable(right.forward,
                                   lambda x: mcjax.Diagonal(jnp.cos(x)) @ mcjax.Diagonal(2 * x),
                                   links=right.links)
    r = mcjax.check_chain(swapped, X)
    assert not r.ok and "every link is right" in r.diagnosis[-1]


def test_taylor_steps_that_leave_the_domain_are_left_out():
    """log near 0: the Taylor ladder's largest steps reach x <= 0 at some seeds; that is no
    failure (it was a false alarm for 3% of the registry's log points), a wrong J still is."""
    x = jnp.array([0.05, 1.0, 1.0, 1.0])
    dlog = lambda x: mcjax.Diagonal(1 / x)  # noqa: E731
    reports = [mcjax.check(jnp.log, dlog, x, seed=s) for s in range(8)]
    assert all(r.ok for r in reports), [str(r) for r in reports if not r.ok][:1]
    assert any("leaves f's domain" in r.taylor.note for r in reports)
    assert not mcjax.check(jnp.log, lambda x: mcjax.Diagonal(1.001 / x), x, seed=0).ok


def test_a_float64_only_scan_is_checked_without_a_float32_reference():
    """An RNN whose scan carry is typed by a float64 constant cannot run on float32
    arguments (JAX refuses the carry's new type): its rounding is not measured in float32,
    the right derivative passes and wrong ones fail, where the checker crashed."""
    W = jnp.eye(3, dtype=jnp.float64) * 0.5

    def f(h0):
        return jax.lax.scan(lambda h, _: (jnp.tanh(W @ h), h[0]), h0, None, length=3)[1]

    x = jnp.asarray([0.1, -0.2, 0.3], jnp.float64)
    assert mcjax.check(f, jax.jacrev(f), x).ok
    assert not mcjax.check(f, lambda x: 1.01 * jax.jacrev(f)(x), x).ok
    assert not mcjax.check(f, lambda x: -jax.jacrev(f)(x), x).ok


def test_f_that_draws_random_numbers_in_its_dtype():
    """``jax.random.normal(key, shape, x.dtype)``: in float64 f draws other numbers, so the
    float64 references (finite differences, the rounding measured against float64) are of
    another function; autodiff in f's dtype judges alone: the right derivative passes and
    slips fail (they passed: the other draws read as a huge rounding of f's)."""
    def f(v):
        return v * jax.random.normal(jax.random.key(0), v.shape, v.dtype)

    x = jnp.linspace(-1.0, 1.0, 5, dtype=jnp.float32)
    right = mcjax.check(f, jax.jacfwd(f), x)
    assert right.ok and any("draws random numbers" in n for n in right.notes)
    assert not mcjax.check(f, lambda v: -jax.jacfwd(f)(v), x).ok
    assert not mcjax.check(f, lambda v: 1.1 * jax.jacfwd(f)(v), x).ok


def test_one_autodiff_mode_not_finite_where_the_other_is():
    """``jax.jacrev(jax.scipy.special.spence)`` is NaN at these points (a 0 · inf in JAX's
    rule), ``jax.jacfwd`` finite: jacfwd judges, said in a note, where the check failed a
    right derivative on the NaN; slips still fail."""
    import jax.scipy.special as jsp

    x = jnp.asarray([1.77, 1.04, 0.58], jnp.float64)
    right = mcjax.check(jsp.spence, jax.jacfwd(jsp.spence), x)
    assert right.ok and any("jax.jacfwd is the exact reference" in n for n in right.notes)
    assert not mcjax.check(jsp.spence, lambda x: -jax.jacfwd(jsp.spence)(x), x).ok
