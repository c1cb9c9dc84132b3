"""One module per scenario of issue 10; each exposes `run(budget) -> Result` and `TITLE`."""
