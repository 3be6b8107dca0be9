# Lesson 3: the 503, then the right order on the same connection.
connect smtp://${MX_EXAMPLE_NET_SMTP}
S: 220
C: HELO learner.test
S: 250
C: RCPT TO:<bob@example.net>
S: 503
C: MAIL FROM:<alice@isp.test>
S: 250
C: RCPT TO:<bob@example.net>
S: 250
C: QUIT
S: 221
