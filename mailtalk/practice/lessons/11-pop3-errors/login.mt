# Lesson 11: one POP3 login as bob with ${PASSWORD_TRIED}; ${EXPECT} is what it gets.
connect pop3://${MX_EXAMPLE_NET_POP3}
S: +OK
C: USER bob
S: +OK
C: PASS ${PASSWORD_TRIED}
S: ${EXPECT}
C: QUIT
S: +OK
