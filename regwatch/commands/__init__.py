"""One module per ``regwatch`` subcommand."""
