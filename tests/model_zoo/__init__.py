"""Tests of model_zoo: entries, downloads, model folders, bundled weights."""
