"""Tests of mobile_cv.config: keys, files, overrides, ranges and their errors."""
