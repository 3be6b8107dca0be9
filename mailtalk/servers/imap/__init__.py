"""The reference IMAP server: session and commands (server), command arguments
(tokens, mailbox_args, message_args), FETCH (fetch) and SEARCH (search)."""
