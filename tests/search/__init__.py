"""Tests of mobile_cv.search: supernets, budgets, cost kinds, masked blocks."""
