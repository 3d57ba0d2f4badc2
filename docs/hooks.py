"""mkdocs hooks: the pages and tables that are generated from the code, so they cannot drift.

- ``primitives.md`` (Primitive coverage) from the primitive table and JAX's own JVP table;
- ``rules.md`` (The rules) is generated from ``mcjax.registry.REGISTRY`` at build time: every rule with
  its formula, shapes, paper section, the class of the Jacobian each derivative returns (found
  by calling it abstractly, with ``jax.eval_shape``) and its verdict from ``mcjax.registry.verify``.
- A page may hold markers ``<!-- mcjax: NAME -->``; each is replaced by a generated table
  (see ``MARKERS``).  An unknown marker fails the build.

Verifying every rule takes seconds, so its results are cached under ``.cache/mcjax-docs/``,
keyed by the hash of the package's sources and the JAX version.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)  # the rules are verified in float64

import jax.numpy as jnp  # noqa: E402

import mcjax  # noqa: E402
from mcjax import conventions  # noqa: E402
from mcjax._check._verify import second_label  # noqa: E402
from mcjax._cli import _summary  # noqa: E402
from mcjax._registry import SECTIONS  # noqa: E402

log = logging.getLogger("mkdocs.plugins.mcjax")
ROOT = Path(__file__).resolve().parent.parent

# Distinct sizes, so that a concrete shape reads back as symbols: (4, 3) -> (m, n).
DIMS = {"n": 3, "m": 4, "B": 2, "k": 5}
SYMBOLS = {size: name for name, size in DIMS.items()}
# The verification the rules page reports: one non-square shape case, float64.
VERIFY_CASE = dict(conventions.SHAPE_CASES[1])
VERIFY_DTYPE = "float64"


# -- the rules page -------------------------------------------------------------------------
def symbolic(shape) -> str:
    names = [SYMBOLS.get(int(d), str(d)) for d in shape]
    return "(" + ", ".join(names) + ("," if len(names) == 1 else "") + ")"


def describe(derivative) -> tuple[str, str]:
    """(structured form, Jacobian shape) of a derivative's abstract value."""
    if isinstance(derivative, mcjax.Composed):
        outer, inner = describe(derivative.outer)[0], describe(derivative.inner)[0]
        form = f"Composed({outer} @ {inner})"
    elif isinstance(derivative, mcjax.Sum):
        form = "Sum(" + " + ".join(describe(t)[0] for t in derivative.terms) + ")"
    elif isinstance(derivative, mcjax.Jacobian):
        form = type(derivative).__name__
    elif isinstance(derivative, jax.ShapeDtypeStruct):
        return "array", symbolic(derivative.shape)
    else:
        return "gradient pytree", "pytree of the argument"
    return form, f"{symbolic(derivative.out_shape)} + {symbolic(derivative.in_shape)}"


def source_key() -> str:
    digest = hashlib.sha256(jax.__version__.encode())
    for path in sorted((ROOT / "mcjax").rglob("*.py")):
        digest.update(str(path.relative_to(ROOT)).encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def verdicts() -> dict[tuple[str, str], dict]:
    """(rule, wrt) -> the ``as_json`` entry of its derivative, computed once per source."""
    cache = ROOT / ".cache" / "mcjax-docs" / f"verify-{source_key()}.json"
    if cache.exists():
        entries = json.loads(cache.read_text())
    else:
        results = mcjax.registry.verify(dtypes=(VERIFY_DTYPE,), cases=(VERIFY_CASE,), seed=0)
        entries = _summary.as_json(results)
        for entry in entries:
            for d in entry["derivatives"]:
                d.pop("cases")  # only the summary is shown
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(entries))
    return {(e["name"], d["wrt"]): d for e in entries for d in e["derivatives"]}


def passed(checked, rule, wrt) -> bool:
    return bool((checked.get((rule.name, wrt)) or {}).get("ok"))


def verdict_text(v: dict | None) -> str:
    if v is None:
        return "not verified"
    if not v["ok"]:
        return "**FAILED** " + "; ".join(v["errors"]).replace("|", r"\|")
    worst = max(v[ref]["max_rel"] for ref in _summary.REFERENCES if ref in v)
    return f"✓ (max rel. error {worst:.0e})" if worst else "✓ (exact)"


def forward_reference(forward) -> str:
    """A link to the forward function's API entry, or where it is defined."""
    name, module = forward.__name__, forward.__module__
    if name in mcjax.__all__ and getattr(mcjax, name) is forward:
        return f"[`mcjax.{name}`][mcjax.{name}]"
    if getattr(sys.modules.get(module), name, None) is forward:
        return f"`{module}.{name}`"
    return f"defined in `{module}`"


def cell(latex: str) -> str:
    """LaTeX inside a markdown table cell: a literal ``|`` would end the cell."""
    return "$" + latex.replace("|", r"\vert ") + "$"


def labels(rule) -> list[str]:
    """The rule's verified derivatives as ``verify`` labels them: each argument, then each
    second derivative's pair ``"(a, b)"``."""
    return list(rule.wrt) + [second_label(a, b) for a, b in rule.hessian]


def rules_markdown() -> str:
    checked = verdicts()
    rules = list(mcjax.registry.REGISTRY)
    n_derivatives = sum(len(labels(r)) for r in rules)
    n_second = sum(len(r.hessian) for r in rules)
    n_ok = sum(passed(checked, r, w) for r in rules for w in labels(r))
    dims = ", ".join(f"{k} = {v}" for k, v in VERIFY_CASE.items())
    out = [
        "# The rules",
        "",
        f"Every rule registered in `mcjax.registry.REGISTRY`: {len(rules)} rules, {n_derivatives} "
        f"hand-derived derivatives ({n_second} of them second derivatives). This page is generated from the registry when the site "
        f"is built (by `docs/hooks.py`), so it lists exactly what `mcjax verify --list` lists.",
        "",
        "- **Shapes** use the rule's symbolic dimensions; a Jacobian's shape is written "
        "`out.shape + in.shape` ([numerator layout](conventions.md#layout)).",
        "- **Second derivatives** $\\partial^2 f/\\partial a\\,\\partial b$ of a scalar rule have "
        "shape `a.shape + b.shape` and are verified as the Jacobian of `jax.grad(f, a)` with "
        "respect to `b`, i.e. against `jax.hessian` (see [Checking a Hessian](check-hessian.md)).",
        "- **Structured form** is the class of the value the derivative returns "
        "(see [Structured Jacobians](jacobians.md)), found by calling it on an example "
        "with `jax.eval_shape`.",
        f"- **Verified**: compared with `jax.jacfwd`, `jax.jacrev` (and `jax.grad` for scalar "
        f"outputs) while the site was built, in {VERIFY_DTYPE} at {dims}, seed 0: "
        f"{n_ok} of {n_derivatives} derivatives agree. `mcjax verify` checks float32 as well "
        f"and three shape cases.",
        "",
        "| rule | § | derivatives | verified |",
        "|---|---|---|---|",
    ]
    for rule in sorted(rules, key=lambda r: list(SECTIONS).index(r.section)):
        ok = all(passed(checked, rule, w) for w in labels(rule))
        wrts = "<br>".join([f"∂/∂`{w}` = {cell(d.latex)}" for w, d in rule.wrt.items()]
                           + [f"∂²/∂`{a}`∂`{b}` = {cell(d.latex)}"
                              for (a, b), d in rule.hessian.items()])
        out.append(f"| [`{rule.name}`](#{anchor(rule.name)}) | {rule.section} | {wrts} "
                   f"| {'✓' if ok else '**FAILED**'} |")
    for section, title in SECTIONS.items():
        members = [r for r in rules if r.section == section]
        if not members:
            continue
        out += ["", f"## §{section} {title}" if section != "beyond" else f"## {title}"]
        for rule in members:
            out += rule_markdown(rule, checked)
    failed = [f"{r.name} wrt {w}" for r in rules for w in labels(r) if not passed(checked, r, w)]
    if failed:
        log.warning("mcjax docs: these derivatives failed verification: %s", ", ".join(failed))
    return "\n".join(out) + "\n"


def anchor(name: str) -> str:
    return "rule-" + re.sub(r"[^A-Za-z0-9_-]", "-", name)


def rule_markdown(rule, checked) -> list[str]:
    args = rule.example(0, DIMS, jnp.float32)
    result = jax.eval_shape(rule, *args)
    result_shape = (symbolic(result.shape) if isinstance(result, jax.ShapeDtypeStruct)
                    else "a pytree")
    arg_shapes = ", ".join(
        f"`{name}`: " + ("a pytree" if dims == ("*",) else f"`{symbolic(DIMS[d] for d in dims)}`")
        for name, dims in rule.shapes.items()
    )
    lines = [
        "",
        f"### `{rule.name}` {{#{anchor(rule.name)}}}",
        "",
        rule.description,
        "",
        f"Forward function {forward_reference(rule.forward)}; arguments {arg_shapes}; "
        f"result `{result_shape}`.",
    ]
    if rule.hyper:
        fixed = ", ".join(f"`{k}={v!r}`" for k, v in rule.hyper.items())
        lines.append(f"This rule fixes {fixed}.")
    if rule.kinks:
        lines.append(f"Kinks and singularities: {rule.kinks}.")
    lines += ["", "| ∂/∂ | formula | Jacobian shape | structured form | verified |",
              "|---|---|---|---|---|"]
    for wrt, d in rule.wrt.items():
        form, shape = describe(jax.eval_shape(rule.derivative(wrt), *args))
        lines.append(f"| `{wrt}` | {cell(d.latex)} | `{shape}` | `{form}` "
                     f"| {verdict_text(checked.get((rule.name, wrt)))} |")
    if rule.hessian:
        lines += ["", "| ∂²/∂ ∂ | second derivative | shape | structured form | verified |",
                  "|---|---|---|---|---|"]
    for (a, b), d in rule.hessian.items():
        value = jax.eval_shape(lambda *xs, a=a, b=b: rule.second_derivative(a, b)(
            *xs, **rule.hyper), *args)
        form, shape = describe(value)
        lines.append(f"| `{a}`, `{b}` | {cell(d.latex)} | `{shape}` | `{form}` "
                     f"| {verdict_text(checked.get((rule.name, second_label(a, b))))} |")
    return lines


# -- tables for the hand-written pages -----------------------------------------------------
def tolerances() -> str:
    """The checker's relative threshold ``32 eps sqrt(T)`` per dtype, at a few term counts."""
    terms = (1, 64, 4096)
    rows = ["| dtype | eps | " + " | ".join(f"rtol, T = {t}" for t in terms) + " | atol |",
            "|---|---|" + "---|" * len(terms) + "---|"]
    for dtype in ("float16", "bfloat16", "float32", "float64"):
        eps = float(jnp.finfo(dtype).eps)
        rows.append(f"| `{dtype}` | {eps:.1e} | "
                    + " | ".join(f"{conventions.check_rtol(dtype, t):.1e}" for t in terms)
                    + f" | {conventions.check_atol(dtype):.0e} |")
    return "\n".join(rows)


def kinks() -> str:
    """Each kink convention: the constant, what the rule returns, what JAX's autodiff gives."""
    zero = jnp.zeros((1,))
    cases = [
        ("`relu'(0)`", "RELU_GRAD_AT_ZERO", mcjax.derivative(mcjax.relu)(zero),
         "`jax.grad(jax.nn.relu)(0.)`", jax.grad(jax.nn.relu)(0.0)),
        ("`leaky_relu'(0)`", "LEAKY_RELU_GRAD_AT_ZERO", mcjax.derivative(mcjax.leaky_relu)(zero),
         "`jax.grad(jax.nn.leaky_relu)(0.)`", jax.grad(jax.nn.leaky_relu)(0.0)),
        ("`abs'(0)`", "ABS_GRAD_AT_ZERO", mcjax.derivative("abs")(zero),
         "`jax.grad(jnp.abs)(0.)`", jax.grad(jnp.abs)(0.0)),
        ("`∂ max(x, y) / ∂x` at `x = y`", "MAX_TIE_SHARE",
         mcjax.derivative(mcjax.maximum, "x")(zero, zero),
         "`jax.grad(jnp.maximum)(0., 0.)`", jax.grad(jnp.maximum)(0.0, 0.0)),
    ]
    rows = ["| derivative at the kink | constant in `mcjax.conventions` | the mcjax rule gives "
            "| JAX gives |", "|---|---|---|---|"]
    for what, constant, ours, jax_expr, theirs in cases:
        value = getattr(conventions, constant)
        ours, theirs = float(ours.dense()[0, 0]), float(theirs)
        if not ours == theirs == value:
            log.warning("mcjax docs: at the kink %s the convention %s = %g, the rule gives %g "
                        "and JAX %g; they should agree", what, constant, value, ours, theirs)
        rows.append(f"| {what} | `{constant} = {value:g}` | {ours:g} | {theirs:g} ({jax_expr}) |")
    rows.append("")
    rows.append(f"Random verification points keep `KINK_MARGIN = {conventions.KINK_MARGIN:g}` "
                "away from every kink; at a kink itself the checker accepts JAX's value, the "
                "one-sided derivatives and their average (see *Check your own derivative*).")
    return "\n".join(rows)


def shape_cases() -> str:
    names = list(conventions.SHAPE_CASES[0])
    rows = ["| case | " + " | ".join(f"`{n}`" for n in names) + " |",
            "|---|" + "---|" * len(names)]
    for i, case in enumerate(conventions.SHAPE_CASES, 1):
        rows.append(f"| {i} | " + " | ".join(str(case[n]) for n in names) + " |")
    return "\n".join(rows)


def readme_commands() -> str:
    """The README's first code block: the two commands."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"```bash\n(.*?)```", readme, re.S)
    if match is None:
        raise ValueError("README.md has no ```bash block")
    return f"```bash\n{match.group(1)}```"


def cli_help(command: str) -> str:
    from mcjax._cli import build_parser

    os.environ["COLUMNS"] = "88"  # argparse wraps to the terminal's width: fix it
    parser = build_parser()
    sub = next(a for a in parser._subparsers._group_actions if a.dest == "command")
    return f"```text\n{sub.choices[command].format_help()}```"


def load_bench():
    """experiments/bench_jacobians.py as a module (experiments/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_jacobians",
                                                  ROOT / "experiments" / "bench_jacobians.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    return bench


def bench_jacobians() -> str:
    """The structured-Jacobian benchmark: machine, command, tables, from its results.json."""
    bench = load_bench()
    results = json.loads((ROOT / "docs" / "benchmarks" / "jacobians" / "results.json").read_text())
    m, n, rows = results["machine"], max(results["sizes"]), results["rows"]
    speedups = ["| n | " + " | ".join(f"`{c}`" for c in results["cases"]) + " |",
                "|---|" + "---|" * len(results["cases"])]
    for size in results["sizes"]:
        cells = []
        for case in results["cases"]:
            both = [bench.ratio(rows, case, size, slow, "structured")
                    for slow in ("jacfwd", "jacrev")]
            cells.append(bench.fmt_ratio(min((r for r in both if r is not None), default=None)))
        speedups.append(f"| {size} | " + " | ".join(cells) + " |")
    return "\n".join([
        f"Measured on **{m['cpu']}, {m['cores']} cores** ({m['device']}; {m['platform']}; "
        f"Python {m['python']}, jax {m['jax']}), {results['dtype']}, affine map with "
        f"m = {results['affine_m']}, with",
        "",
        f"```bash\n{results['command']}\n```",
        "",
        f"### All cases at n = {n}",
        "",
        bench.table(results, n),
        "### Speed-up over autodiff's faster mode, for every n",
        "",
        "The time of the faster of `jax.jacfwd` and `jax.jacrev` over the structured rule's "
        "(– where both were skipped):",
        "",
        "\n".join(speedups),
    ])


def primitives_markdown() -> str:
    """The primitive coverage page: every primitive the installed JAX can differentiate, and
    what derive, the checker and the diagnosis do with it (from the primitive table)."""
    from mcjax._primitives import coverage

    rows = coverage()
    entries = [r.entry for r in rows if r.entry is not None]
    structured = sum(e.structured for e in entries)
    switching = sum(e.switch is not None for e in entries)
    slips = sum(bool(e.slips.terms or e.slips.value or e.slips.gate) for e in entries)
    lines = [
        "# Primitive coverage",
        "",
        "Every primitive the installed JAX "
        f"({jax.__version__}) can differentiate has one entry in mcjax's primitive table "
        "(`mcjax/_primitives/`): its structured Jacobian for `mcjax.derive`, or the "
        "reason for the fallback (JAX's linear map of that one equation, named: correct, "
        "unstructured); how it switches, for the checker; its slip sites, for the diagnosis. "
        "This page is generated from the table; a test fails on any primitive without an "
        "entry, so a JAX upgrade shows what is new.",
        "",
        f"**{len(rows)} primitives**: {len(entries)} with an entry, {structured} with a "
        f"structured Jacobian, {switching} whose switches the checker reads, {slips} with slip "
        "sites.",
        "",
        "| primitive | family | derive | checker | slip sites |",
        "|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda r: (r.entry.family if r.entry else "", r.name)):
        e = row.entry
        if e is None:
            lines.append(f"| `{row.name}` | – | **missing** | – | – |")
            continue
        derive = ("walked: " + e.fallback if e.walked else "structured" if e.structured
                  else (e.fallback or "no derivative"))
        check = e.behaviour + (" (read)" if e.switch is not None else "")
        sites = ", ".join(filter(None, [
            "a term" if e.slips.terms else "", "value for derivative" if e.slips.value else "",
            "a gate" if e.slips.gate else ""])) or "–"
        lines.append(f"| `{row.name}` | {e.family} | {derive} | {check} | {sites} |")
    return "\n".join(lines) + "\n"


MARKERS = {
    "tolerances": tolerances,
    "kinks": kinks,
    "shape-cases": shape_cases,
    "readme-commands": readme_commands,
    "cli-help-verify": lambda: cli_help("verify"),
    "bench-jacobians": bench_jacobians,
}
MARKER = re.compile(r"<!-- mcjax: ([\w-]+) -->")


# -- the hooks ---------------------------------------------------------------------------------
def on_files(files, config):
    from mkdocs.structure.files import File

    files.append(File.generated(config, "rules.md", content=rules_markdown()))
    files.append(File.generated(config, "primitives.md", content=primitives_markdown()))
    return files


def on_page_markdown(markdown, page, config, files):
    def replace(match):
        name = match.group(1)
        if name not in MARKERS:
            raise KeyError(f"{page.file.src_uri}: unknown marker <!-- mcjax: {name} -->; "
                           f"known: {', '.join(MARKERS)}")
        return MARKERS[name]()

    return MARKER.sub(replace, markdown)
