"""One module per verb: each loads, runs the stages, writes its outputs atomically and returns a frozen result."""
