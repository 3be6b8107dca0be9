# Lesson 14: dave logs in while his spool cannot be split: the right password, and -ERR.
connect pop3://${MX_EXAMPLE_NET_POP3}
S: +OK
C: USER dave
S: +OK
C: PASS postbox
S: -ERR
C: QUIT
S: +OK
