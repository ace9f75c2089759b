"""Tests of mobile_cv.engine: the loop, runs, resume, signals, the run lock, memory checks."""
