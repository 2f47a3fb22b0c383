"""Triton model sources (config.pbtxt + a tiny 1/model.py each), shipped as package data;
`adgen repo build` reads them with importlib.resources."""
