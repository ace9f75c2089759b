"""Tests of mobile_cv.latency: latency tables and device bundles."""
