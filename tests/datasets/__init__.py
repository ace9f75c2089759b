"""Tests of mobile_cv.data (named datasets/: tests/data/ holds fixture data)."""
