"""The reference IMAP server: session and commands (server), command parser (parse),
FETCH (fetch) and SEARCH (search)."""
