# Lesson 14: the repaired spool, fetched; the first message deleted, and QUIT writes the
# spool again without it.
connect pop3://${MX_EXAMPLE_NET_POP3}
S: +OK
C: USER dave
S: +OK
C: PASS postbox
S: +OK
C: LIST
S: +OK
C: RETR 1
S: +OK
C: RETR 2
S: +OK
C: DELE 1
S: +OK
C: QUIT
S: +OK
