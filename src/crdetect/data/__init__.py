"""Data: FITS input/output, simulated benchmarks, CR injection and labels from exposure stacks."""
