"""The `rnas` commands, one module each; rnas/cli.py builds the parser from their table."""
