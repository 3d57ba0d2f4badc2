"""Everything done to a traced program: tracing and keys, compiling, walking and reading it.

It knows nothing of structured Jacobians: the table of what each primitive's derivative is
(``mcjax._primitives``) stands above them, and above this.
"""
