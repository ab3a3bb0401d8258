"""duodecode benchmarks: the headline report (`python -m benchmarks`), the reference language, training, kernel checks."""
