"""The test suite: one folder per part of the library (tests/data/ holds fixture data, not tests)."""
