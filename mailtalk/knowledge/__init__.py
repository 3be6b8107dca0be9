"""What mailtalk knows about the protocols, kept as data: the command reference."""
