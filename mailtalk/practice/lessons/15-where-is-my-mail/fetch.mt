# Lesson 15: Bob fetches his newest message (LIST's last) with POP3.
connect pop3://${MX_EXAMPLE_NET_POP3}
S: +OK
C: USER bob
S: +OK
C: PASS builder
S: +OK
C: RETR 1
S: +OK
C: QUIT
S: +OK
