# Lesson 9: a client that waits for the greeting (five seconds), then says HELO.
connect smtp://${MX_EXAMPLE_NET_SMTP}
S: 220
C: HELO learner.test
S: 250
C: QUIT
S: 221
