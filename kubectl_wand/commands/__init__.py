"""One module per verb. Each has an options object: complete (from args) -> validate -> run (streams in)."""
