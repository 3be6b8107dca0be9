"""The click commands, one module per family, imported only when used (see cli.MailtalkGroup)."""
