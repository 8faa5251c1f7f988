"""Code shared by every architecture: inputs, data, training, metrics, plots, serving."""
