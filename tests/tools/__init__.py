"""Tests of tools/ as a user runs them: the commands, train/eval/search end to end, their errors."""
