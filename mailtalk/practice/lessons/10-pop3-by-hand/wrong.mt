# Lesson 10 not done: QUIT right after RETR, so nothing was marked and nothing dropped.
connect pop3://${MX_EXAMPLE_NET_POP3}
S: +OK
C: USER bob
S: +OK
C: PASS builder
S: +OK
C: STAT
S: +OK
C: LIST
S: +OK
C: RETR 1
S: +OK
C: QUIT
S: +OK
