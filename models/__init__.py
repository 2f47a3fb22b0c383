"""The release models (weights, config.json, concepts, model cards), shipped as package
data and found with importlib.resources."""
