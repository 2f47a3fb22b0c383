"""Triton model sources (a config.pbtxt per model; model.py, the one python model every python
stage runs), shipped as package data;
`adgen repo build` reads them with importlib.resources."""
