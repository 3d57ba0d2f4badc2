"""Training: the jitted step and epoch, optimizers by name, checkpoints, the training loop.

The package is private (``_train``) because ``mcjax.train`` is the training function itself;
the public names are re-exported from :mod:`mcjax`.  Data flows one way: the models here take
their hand-derived gradients from the registry (``mcjax.rules``); nothing under ``rules``
imports this package.
"""
