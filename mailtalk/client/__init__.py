"""The live session with a mail server: the engine (conversation, options, credentials,
transcript, recording) and the two ways of driving it by hand (pipe mode, the REPL)."""
