# Lesson 3 not done: the right order from the start, so no 503 is ever seen.
connect smtp://${MX_EXAMPLE_NET_SMTP}
S: 220
C: HELO learner.test
S: 250
C: MAIL FROM:<alice@isp.test>
S: 250
C: RCPT TO:<bob@example.net>
S: 250
C: QUIT
S: 221
