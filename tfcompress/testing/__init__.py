"""Model builders for tests, benchmarks and the bundled sample models (seeded, no downloads)."""
