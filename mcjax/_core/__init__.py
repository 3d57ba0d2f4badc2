"""The ground floor: errors, conventions, the tolerance policy, loading a user's code.

Nothing here imports the rest of mcjax."""
