"""`mcjax check MODULE:FUNCTION MODULE:DERIVATIVE`: exit 0 when right, 1 when wrong."""

import json

from mcjax.__main__ import main

USER_FILE = '''
import jax.numpy as jnp

def f(W, x):
    return jnp.tanh(W @ x)

def df_dx(W, x):
    return (1 - jnp.tanh(W @ x) ** 2)[:, None] * W

def df_dx_transposed(W, x):
    return df_dx(W, x).T
'''


def test_check_command(tmp_path, capsys):
    path = tmp_path / "mine.py"
    path.write_text(USER_FILE)
    assert main(["check", f"{path}:f", f"{path}:df_dx", "--shapes", "3,3", "3", "--argnums", "1"]) == 0
    assert "mcjax.check: ok" in capsys.readouterr().out
    assert main(["check", f"{path}:f", f"{path}:df_dx_transposed", "--shapes", "3,3", "3",
                 "--argnums", "1", "--dtype", "float64"]) == 1
    assert "transposed" in capsys.readouterr().out
    assert main(["check", f"{path}:f", f"{path}:df_dx_transposed", "--shapes", "3,3", "3",
                 "--argnums", "1", "--layout", "denominator", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    # a shape no derivative of f has: the derivative under test is wrong (1), said in a line
    assert main(["check", f"{path}:f", f"{path}:df_dx_transposed", "--shapes", "3,4", "4",
                 "--argnums", "1"]) == 1
    assert "shape (4, 3)" in capsys.readouterr().err
