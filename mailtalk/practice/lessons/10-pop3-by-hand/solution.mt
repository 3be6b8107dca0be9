# Lesson 10: POP3 by hand; the first session ends without QUIT (the next connect
# drops it), the second with QUIT.
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
C: DELE 1
S: +OK
connect pop3://${MX_EXAMPLE_NET_POP3}
S: +OK
C: USER bob
S: +OK
C: PASS builder
S: +OK
C: DELE 1
S: +OK
C: QUIT
S: +OK
