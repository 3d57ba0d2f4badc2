"""Everything done to a traced program: tracing and keys, compiling, walking, the primitives."""
