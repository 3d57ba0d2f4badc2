"""The data of the paper's experiments: the neuron's synthetic data and the digits.

``mcjax.datasets.neuron_data`` draws inputs and targets from a known ReLU neuron (the paper's §1 setting),
``mcjax.datasets.digits_data`` loads scikit-learn's bundled 8x8 digits (no download;
``pip install 'mcjax[experiments]'``).
"""

from mcjax._train._data import digits_data, neuron_data

__all__ = ["neuron_data", "digits_data"]
