# Lesson 13: MAIL FROM at the MX and a POP3 login as bob; ${SMTP_EXPECT} and
# ${POP3_EXPECT} are what they get (a full disk, or room again).
connect smtp://${MX_EXAMPLE_NET_SMTP}
S: 220
C: HELO learner.test
S: 250
C: MAIL FROM:<alice@isp.test>
S: ${SMTP_EXPECT}
C: QUIT
S: 221
connect pop3://${MX_EXAMPLE_NET_POP3}
S: +OK
C: USER bob
S: +OK
C: PASS builder
S: ${POP3_EXPECT}
C: QUIT
S: +OK
