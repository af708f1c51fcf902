"""One module per pipeline stage; the CLI only parses options and calls these."""
