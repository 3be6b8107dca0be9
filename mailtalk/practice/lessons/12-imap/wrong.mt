# Lesson 12 not done: the message is read but never marked \Seen.
connect imap://${MX_EXAMPLE_NET_IMAP}
S: OK
C: LOGIN bob builder
S: OK
C: SELECT INBOX
S: OK
C: FETCH 1 BODY[]
S: OK
C: LOGOUT
S: OK
