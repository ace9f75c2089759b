"""Tests of mobile_cv.arch: ops, the builder, arch defs, the published models."""
